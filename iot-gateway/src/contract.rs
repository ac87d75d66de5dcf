//! The `iot` contract: the device registry (each device's key, owner organisation, kind and what
//! it is bound to; revocation) and the anchors of reading batches (Merkle roots signed by a
//! gateway). Deterministic: block time only.

use chain_core::contract::{CallContext, Contract, ContractError, parse_args};
use chain_core::crypto::{PublicKey, SigAlg};
use chain_core::system::{self, Member};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub const NAME: &str = "iot";
/// Members with this role anchor reading batches (the gateways' keys).
pub const ROLE_GATEWAY: &str = "iot.gateway";
/// Members with this role (or `org_admin`) register and revoke their organisation's devices.
pub const ROLE_DEVICE_ADMIN: &str = "iot.admin";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// Publishes signed readings (temperature, humidity…).
    Sensor,
    /// Publishes signed scans of GS1 Digital Link codes at a read point.
    Scanner,
}

/// What a device's reports are about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Binding {
    /// A lot (GTIN + lot number): its readings go to the lot's cold-chain rule.
    Lot { gtin: String, lot: String },
    /// A shipment (e.g. an SSCC or a carrier's reference).
    Shipment { id: String },
    /// A location (GLN): a scanner's read point, a cold room's sensor.
    Location { gln: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    Active,
    Revoked,
}

/// A registered device, under `device/{did}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// `did:key` of the device's public key (its identity in topics and payloads).
    pub did: String,
    /// The public key in text form (`ed25519:<hex>`, `sm2:<hex>`).
    pub public_key: String,
    pub org: String,
    pub name: String,
    pub kind: DeviceKind,
    #[serde(default)]
    pub binding: Option<Binding>,
    pub status: DeviceStatus,
    pub registered_by: String,
    pub registered_height: u64,
    #[serde(default)]
    pub revoked_height: Option<u64>,
    #[serde(default)]
    pub revoked_reason: Option<String>,
}

/// An anchored batch of readings, under `batch/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchAnchor {
    pub id: String,
    /// Merkle root (hex) over the batch's reading hashes (see docs/spec/iot.md).
    pub root: String,
    pub count: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    pub gateway: String,
    pub height: u64,
}

pub fn device_key(did: &str) -> String {
    format!("device/{did}")
}

pub fn batch_key(id: &str) -> String {
    format!("batch/{id}")
}

pub struct IotContract;

impl Contract for IotContract {
    fn name(&self) -> &'static str {
        NAME
    }
    fn methods(&self) -> &'static [&'static str] {
        &[
            "register_device",
            "bind_device",
            "revoke_device",
            "anchor_batch",
        ]
    }
    fn call(
        &self,
        ctx: &mut CallContext<'_>,
        method: &str,
        args: &[u8],
    ) -> Result<(), ContractError> {
        match method {
            "register_device" => register(ctx, parse_args(args)?),
            "bind_device" => bind(ctx, parse_args(args)?),
            "revoke_device" => revoke(ctx, parse_args(args)?),
            "anchor_batch" => anchor(ctx, parse_args(args)?),
            other => Err(ContractError::new(
                "unknown_method",
                format!("iot has no method {other}"),
            )),
        }
    }
}

fn device_admin(ctx: &CallContext<'_>) -> Result<Member, ContractError> {
    let m = system::sender_member(ctx)?;
    if m.has_role(ROLE_DEVICE_ADMIN) || m.has_role(system::ROLE_ORG_ADMIN) {
        Ok(m)
    } else {
        Err(ContractError::not_permitted(format!(
            "member {} needs role `{ROLE_DEVICE_ADMIN}` or `{}`",
            m.id(),
            system::ROLE_ORG_ADMIN
        )))
    }
}

fn text(field: &str, v: &str, max: usize) -> Result<(), ContractError> {
    if v.trim().is_empty() || v.len() > max || v.chars().any(char::is_control) {
        return Err(ContractError::invalid_args(format!(
            "{field} must be 1 to {max} bytes without control characters"
        )));
    }
    Ok(())
}

fn check_binding(b: &Option<Binding>) -> Result<(), ContractError> {
    match b {
        None => Ok(()),
        Some(Binding::Lot { gtin, lot }) => {
            if gtin.len() != 14 || !gtin.bytes().all(|c| c.is_ascii_digit()) {
                return Err(ContractError::invalid_args(
                    "a lot binding names a 14-digit GTIN",
                ));
            }
            text("lot", lot, 20)
        }
        Some(Binding::Shipment { id }) => text("shipment", id, 100),
        Some(Binding::Location { gln }) => {
            if gln.len() != 13 || !gln.bytes().all(|c| c.is_ascii_digit()) {
                return Err(ContractError::invalid_args(
                    "a location binding names a 13-digit GLN",
                ));
            }
            Ok(())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterArgs {
    public_key: String,
    name: String,
    kind: DeviceKind,
    #[serde(default)]
    binding: Option<Binding>,
}

/// The signature algorithm of this chain's suite (devices sign with the chain's suite).
fn chain_sig_alg(ctx: &CallContext<'_>) -> SigAlg {
    match ctx.hash_alg() {
        chain_core::crypto::HashAlg::Sm3 => SigAlg::Sm2,
        _ => SigAlg::Ed25519,
    }
}

fn register(ctx: &mut CallContext<'_>, a: RegisterArgs) -> Result<(), ContractError> {
    let m = device_admin(ctx)?;
    text("name", &a.name, 100)?;
    check_binding(&a.binding)?;
    let key: PublicKey = a
        .public_key
        .parse()
        .map_err(|e| ContractError::new("invalid_key", format!("public_key: {e}")))?;
    if key.alg() != chain_sig_alg(ctx) {
        return Err(ContractError::new(
            "wrong_suite",
            format!(
                "this chain's devices sign with {}, not {}",
                chain_sig_alg(ctx).name(),
                key.alg().name()
            ),
        ));
    }
    let did = key.did();
    let k = device_key(&did);
    if ctx.get_json::<Device>(&k)?.is_some() {
        return Err(ContractError::new(
            "device_exists",
            format!("device {did} is registered"),
        ));
    }
    let d = Device {
        did: did.clone(),
        public_key: key.to_text(),
        org: m.org.clone(),
        name: a.name,
        kind: a.kind,
        binding: a.binding,
        status: DeviceStatus::Active,
        registered_by: m.id(),
        registered_height: ctx.block.height,
        revoked_height: None,
        revoked_reason: None,
    };
    ctx.set_json(&k, &d)?;
    ctx.emit(
        "device_registered",
        &json!({"did": did, "org": d.org, "kind": d.kind, "binding": d.binding}),
    )
}

fn own_device(ctx: &CallContext<'_>, m: &Member, did: &str) -> Result<Device, ContractError> {
    let d = ctx
        .get_json::<Device>(&device_key(did))?
        .ok_or_else(|| ContractError::not_found(format!("no device {did}")))?;
    if d.org != m.org {
        return Err(ContractError::not_permitted(format!(
            "device {did} belongs to {}",
            d.org
        )));
    }
    Ok(d)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindArgs {
    did: String,
    #[serde(default)]
    binding: Option<Binding>,
}

fn bind(ctx: &mut CallContext<'_>, a: BindArgs) -> Result<(), ContractError> {
    let m = device_admin(ctx)?;
    check_binding(&a.binding)?;
    let mut d = own_device(ctx, &m, &a.did)?;
    if d.status == DeviceStatus::Revoked {
        return Err(ContractError::new(
            "device_revoked",
            format!("device {} is revoked", a.did),
        ));
    }
    d.binding = a.binding;
    ctx.set_json(&device_key(&a.did), &d)?;
    ctx.emit(
        "device_bound",
        &json!({"did": d.did, "org": d.org, "binding": d.binding}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeArgs {
    did: String,
    reason: String,
}

fn revoke(ctx: &mut CallContext<'_>, a: RevokeArgs) -> Result<(), ContractError> {
    let m = device_admin(ctx)?;
    text("reason", &a.reason, 500)?;
    let mut d = own_device(ctx, &m, &a.did)?;
    if d.status == DeviceStatus::Revoked {
        return Err(ContractError::new(
            "device_revoked",
            format!("device {} is already revoked", a.did),
        ));
    }
    d.status = DeviceStatus::Revoked;
    d.revoked_height = Some(ctx.block.height);
    d.revoked_reason = Some(a.reason);
    ctx.set_json(&device_key(&a.did), &d)?;
    ctx.emit("device_revoked", &json!({"did": d.did, "org": d.org}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnchorArgs {
    id: String,
    root: String,
    count: u64,
    first_ms: u64,
    last_ms: u64,
}

fn anchor(ctx: &mut CallContext<'_>, a: AnchorArgs) -> Result<(), ContractError> {
    let m = system::sender_member(ctx)?;
    if !m.has_role(ROLE_GATEWAY) {
        return Err(ContractError::not_permitted(format!(
            "member {} needs role `{ROLE_GATEWAY}`",
            m.id()
        )));
    }
    text("id", &a.id, 100)?;
    let raw = hex::decode(&a.root).map_err(|_| ContractError::invalid_args("root must be hex"))?;
    if !(32..=64).contains(&raw.len()) {
        return Err(ContractError::invalid_args("root must be 32 to 64 bytes"));
    }
    if a.count == 0 || a.first_ms > a.last_ms {
        return Err(ContractError::invalid_args(
            "a batch holds at least one reading, first_ms ≤ last_ms",
        ));
    }
    let k = batch_key(&a.id);
    if ctx.get_json::<BatchAnchor>(&k)?.is_some() {
        // The gateway retries after a crash: the same batch is anchored once.
        return Err(ContractError::new(
            "batch_exists",
            format!("batch {} is anchored", a.id),
        ));
    }
    let b = BatchAnchor {
        id: a.id,
        root: a.root.to_ascii_lowercase(),
        count: a.count,
        first_ms: a.first_ms,
        last_ms: a.last_ms,
        gateway: m.id(),
        height: ctx.block.height,
    };
    ctx.set_json(&k, &b)?;
    ctx.emit(
        "batch_anchored",
        &json!({"id": b.id, "root": b.root, "count": b.count, "gateway": b.gateway}),
    )
}
