//! The traceability records kept in chain state by the `trace` contract, and their state keys.
//! Everything here is plain data (serde JSON in state); the rules live in `contract`.

use serde::{Deserialize, Serialize};

/// A lot of a product: GTIN (14 digits) and lot number (GS1 AI 10).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LotRef {
    pub gtin: String,
    pub lot: String,
}

impl LotRef {
    pub fn state_key(&self) -> String {
        lot_key(&self.gtin, &self.lot)
    }
}

pub fn product_key(gtin: &str) -> String {
    format!("product/{gtin}")
}
pub fn location_key(gln: &str) -> String {
    format!("location/{gln}")
}
/// GTINs have a fixed length, so the lot (which may contain `/`) is simply the rest.
pub fn lot_key(gtin: &str, lot: &str) -> String {
    format!("lot/{gtin}/{lot}")
}
pub fn item_key(gtin: &str, serial: &str) -> String {
    format!("item/{gtin}/{serial}")
}
pub fn unit_key(sscc: &str) -> String {
    format!("unit/{sscc}")
}
/// Anchors are keyed by the hex digest of the CBV 2.0 event hash ID.
pub fn event_key(hash_hex: &str) -> String {
    format!("event/{hash_hex}")
}
pub fn handover_key(id: &str) -> String {
    format!("handover/{id}")
}
pub fn certificate_key(id: &str) -> String {
    format!("cert/{id}")
}
pub fn recall_key(id: &str) -> String {
    format!("recall/{id}")
}

/// Allowed range of a measured quantity, in hundredths (°C × 100, %RH × 100), so contract
/// comparisons are on integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub min: i64,
    pub max: i64,
}

impl Range {
    pub fn contains(&self, v: i64) -> bool {
        self.min <= v && v <= self.max
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Product {
    pub gtin: String,
    pub name: String,
    #[serde(default)]
    pub name_zh: String,
    #[serde(default)]
    pub brand: String,
    #[serde(default)]
    pub description: String,
    /// Country of origin (ISO 3166-1 alpha-2).
    #[serde(default)]
    pub origin: String,
    pub owner: String,
    #[serde(default)]
    pub temperature: Option<Range>,
    #[serde(default)]
    pub humidity: Option<Range>,
    #[serde(default)]
    pub shelf_life_days: Option<u32>,
    pub registered_height: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Location {
    pub gln: String,
    pub name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub country: String,
    /// Latitude and longitude in micro-degrees (integers keep the contract deterministic).
    #[serde(default)]
    pub geo: Option<(i64, i64)>,
    pub owner: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LotStatus {
    Ok,
    NonConformant,
    Recalled,
}

impl LotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LotStatus::Ok => "ok",
            LotStatus::NonConformant => "non_conformant",
            LotStatus::Recalled => "recalled",
        }
    }
}

/// One reading outside the product's range.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Excursion {
    pub device: String,
    pub time_ms: u64,
    /// `temperature` or `humidity`.
    pub quantity: String,
    pub value: i64,
    pub min: i64,
    pub max: i64,
    pub height: u64,
}

/// At most this many excursions are kept as evidence on a lot (the rest are counted); every
/// reading stays in the transactions that reported it.
pub const MAX_EVIDENCE: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lot {
    pub gtin: String,
    pub lot: String,
    /// Organisation that created the lot.
    pub owner: String,
    /// Organisation that holds it now (changes only by a two-sided handover).
    pub custodian: String,
    pub status: LotStatus,
    #[serde(default)]
    pub produced_ms: Option<u64>,
    #[serde(default)]
    pub expiry_ms: Option<u64>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub quantity: Option<String>,
    /// Lots this lot was made from (transformation inputs) and lots made from it.
    #[serde(default)]
    pub inputs: Vec<LotRef>,
    #[serde(default)]
    pub outputs: Vec<LotRef>,
    /// Logistic units (SSCC) that contain items of this lot.
    #[serde(default)]
    pub units: Vec<String>,
    #[serde(default)]
    pub excursions: Vec<Excursion>,
    #[serde(default)]
    pub excursion_count: u64,
    #[serde(default)]
    pub recall: Option<String>,
    #[serde(default)]
    pub disposition: String,
    pub created_height: u64,
}

/// A serialised item (SGTIN) and the lot it belongs to, when known.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Item {
    pub gtin: String,
    pub serial: String,
    #[serde(default)]
    pub lot: Option<String>,
    #[serde(default)]
    pub unit: Option<String>,
}

/// A logistic unit (SSCC) and what it contains (aggregation).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Unit {
    pub sscc: String,
    /// Contained EPCs (items, nested units) and lots (class-level quantities).
    pub children: Vec<String>,
    pub lots: Vec<LotRef>,
    #[serde(default)]
    pub parent: Option<String>,
}

/// A captured EPCIS event: its identity on chain. The event itself is in the capture
/// transaction's arguments; its digest is here, so a proof of this key proves the event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventAnchor {
    pub event_hash_id: String,
    /// SHA-256 (hex) of the event's JSON as captured (compact serialisation).
    pub digest: String,
    pub event_type: String,
    pub capture_id: String,
    pub by: String,
    pub height: u64,
    /// SHA-256 (hex) of the captured event that declared this one erroneous (EPCIS error
    /// declaration: same hash ID, plus `errorDeclaration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_declaration: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HandoverStatus {
    Offered,
    Accepted,
    Rejected,
    Cancelled,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Handover {
    pub id: String,
    pub from_org: String,
    pub to_org: String,
    pub lots: Vec<LotRef>,
    #[serde(default)]
    pub units: Vec<String>,
    pub status: HandoverStatus,
    /// Member ids that signed each side.
    pub offered_by: String,
    #[serde(default)]
    pub answered_by: Option<String>,
    pub offered_height: u64,
    #[serde(default)]
    pub answered_height: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Certificate {
    pub id: String,
    pub kind: String,
    /// What it certifies: a GTIN, a lot (`gtin/lot`) or a GLN.
    pub subject: String,
    pub issuer: String,
    pub hash: String,
    #[serde(default)]
    pub uri: String,
    #[serde(default)]
    pub valid_until_ms: Option<u64>,
    pub by: String,
    pub height: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Recall {
    pub id: String,
    pub origin: LotRef,
    pub reason: String,
    pub by: String,
    pub height: u64,
    pub time_ms: u64,
    pub lots: Vec<LotRef>,
}
