//! The EPCIS event hash ID of GS1 CBV 2.0 (section 8.9): a canonical "pre-hash" string built
//! from an EPCIS 2.0 JSON-LD event, hashed with SHA-256 and written as
//! `ni:///sha-256;{hex}?ver=CBV2.0` (RFC 6920).
//!
//! The pre-hash string concatenates, without separators:
//! - `eventType=…`, then the standard fields in the canonical property order (`eventTime`,
//!   `eventTimeZoneOffset`, `certificationInfo`, `parentID`, the EPC and quantity lists, `action`,
//!   `transformationID`, `bizStep`, `disposition`, `persistentDisposition`, `readPoint`,
//!   `bizLocation`, the business transaction, destination and source lists,
//!   `sensorElementList`), then `ilmd`, then user extensions;
//! - `key=value` for values, the bare key followed by its children for structures;
//! - list elements and extension fields sorted by their own pre-hash strings (byte order);
//!   `type` of business transactions, sources and destinations precedes their value;
//! - extension keys as `{namespace}localName`, CURIE values expanded, bare CBV terms (e.g.
//!   `shipping`) expanded to their `https://ref.gs1.org/cbv/…` or `https://gs1.org/voc/…` URIs,
//!   old `urn:epcglobal:cbv:…` vocabulary URNs rewritten to web URIs;
//! - EPC URIs and GS1 Digital Link URIs as constrained canonical Digital Links
//!   (`https://id.gs1.org`, no query string, no consumer product variant, lot dropped when a
//!   serial is present);
//! - timestamps in UTC with milliseconds (`YYYY-MM-DDTHH:MM:SS.sssZ`), rounded half up;
//! - numbers without trailing zeros (`452.0` → `452`);
//! - `eventID`, `recordTime`, `errorDeclaration`, JSON-LD keywords (`@context`, `@id`) and
//!   comments left out.
//!
//! Where the standard's wording leaves a choice, the behaviour follows the GS1 conformance
//! vectors in `shared/conformance/epcis/event-hash`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::digital_link::{DigitalLink, Qualifier};
use crate::gs1::epc_urn_to_digital_link;

/// Errors of pre-hash computation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HashError {
    #[error("an EPCIS event must be a JSON object")]
    NotAnObject,
    #[error("the EPCIS event has no \"type\" string")]
    MissingType,
    #[error("{field} {value:?} is not a date-time with a UTC offset ({reason})")]
    Timestamp {
        field: String,
        value: String,
        reason: String,
    },
    #[error("{field} must be {expected}")]
    Shape {
        field: String,
        expected: &'static str,
    },
}

impl HashError {
    /// Stable machine-readable code of the error kind.
    pub fn code(&self) -> &'static str {
        match self {
            HashError::NotAnObject => "epcis_event_not_object",
            HashError::MissingType => "epcis_event_type",
            HashError::Timestamp { .. } => "epcis_timestamp",
            HashError::Shape { .. } => "epcis_field_shape",
        }
    }
}

/// The algorithm version written into hash IDs.
pub const CBV_VERSION: &str = "CBV2.0";

/// Prefixes defined by the standard EPCIS 2.0 JSON-LD context, which every EPCIS document
/// references; a document's own `@context` may add or override prefixes.
const STANDARD_PREFIXES: &[(&str, &str)] = &[
    ("epcis", "https://ref.gs1.org/epcis/"),
    ("cbv", "https://ref.gs1.org/cbv/"),
    ("cbvmda", "urn:epcglobal:cbv:mda:"),
    ("gs1", "https://gs1.org/voc/"),
    ("rdfs", "http://www.w3.org/2000/01/rdf-schema#"),
    ("owl", "http://www.w3.org/2002/07/owl#"),
    ("xsd", "http://www.w3.org/2001/XMLSchema#"),
    ("dcterms", "http://purl.org/dc/terms/"),
];

const RDFS_COMMENT: &str = "{http://www.w3.org/2000/01/rdf-schema#}comment";

/// JSON-LD context needed to canonicalise an event: namespace prefixes and the fields a
/// repository declared as not belonging to the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    prefixes: BTreeMap<String, String>,
    /// Expanded names (`{namespace}local`, or the key as written when it has no known prefix).
    ignored: BTreeSet<String>,
}

impl Default for Context {
    fn default() -> Self {
        Context::new()
    }
}

impl Context {
    /// The prefixes of the standard EPCIS 2.0 context.
    pub fn new() -> Self {
        Context {
            prefixes: STANDARD_PREFIXES
                .iter()
                .map(|(p, iri)| ((*p).to_owned(), (*iri).to_owned()))
                .collect(),
            ignored: BTreeSet::new(),
        }
    }

    /// The context of an EPCIS document or query document: its `@context` prefixes and the
    /// extension fields listed in an `ignoreFields` extension at document, body or query-result
    /// level (a repository convention the conformance vectors use for fields it added itself).
    pub fn from_document(document: &Value) -> Self {
        let mut ctx = Context::new();
        if let Some(c) = document.get("@context") {
            ctx.add_context(c);
        }
        for name in ignore_fields_of(document) {
            let expanded = ctx.expand_key(&name);
            ctx.ignored.insert(expanded);
        }
        ctx
    }

    /// This context with the prefixes of a further `@context` value (e.g. an event's own).
    pub fn with_context(&self, context: &Value) -> Self {
        let mut ctx = self.clone();
        ctx.add_context(context);
        ctx
    }

    /// Adds or overrides one namespace prefix.
    pub fn with_prefix(mut self, prefix: &str, iri: &str) -> Self {
        self.prefixes.insert(prefix.to_owned(), iri.to_owned());
        self
    }

    /// Leaves a field (CURIE such as `ex:captureID`, or a plain key) out of pre-hash strings.
    pub fn ignore_field(mut self, name: &str) -> Self {
        let expanded = self.expand_key(name);
        self.ignored.insert(expanded);
        self
    }

    fn add_context(&mut self, context: &Value) {
        match context {
            Value::Array(items) => items.iter().for_each(|c| self.add_context(c)),
            Value::Object(map) => {
                for (term, definition) in map {
                    if term.starts_with('@') {
                        continue;
                    }
                    // Expanded term definitions (`{"@id": …}`) define prefixes too (JSON-LD 1.1).
                    let iri = match definition {
                        Value::String(iri) => Some(iri.as_str()),
                        Value::Object(d) => d.get("@id").and_then(Value::as_str),
                        _ => None,
                    };
                    if let Some(iri) = iri {
                        self.prefixes.insert(term.clone(), iri.to_owned());
                    }
                }
            }
            // Remote context URLs (the standard EPCIS context) are covered by the built-in
            // prefixes; others cannot be fetched by a pure function.
            _ => {}
        }
    }

    /// `prefix:local` → `{namespace}local` for known prefixes; other keys as written.
    fn expand_key(&self, key: &str) -> String {
        match key.split_once(':') {
            Some((prefix, local)) => match self.prefixes.get(prefix) {
                Some(iri) => format!("{{{iri}}}{local}"),
                None => key.to_owned(),
            },
            None => key.to_owned(),
        }
    }

    /// CURIE values with a known prefix → full IRI.
    fn expand_value(&self, value: &str) -> String {
        match value.split_once(':') {
            Some((prefix, rest)) if !rest.starts_with("//") => match self.prefixes.get(prefix) {
                Some(iri) => format!("{iri}{rest}"),
                None => value.to_owned(),
            },
            _ => value.to_owned(),
        }
    }

    /// Comments annotate an event for people and are not part of it (the vectors leave them out).
    fn is_ignored(&self, key: &str, expanded: &str) -> bool {
        key == "comment"
            || expanded == RDFS_COMMENT
            || self.ignored.contains(expanded)
            || self.ignored.contains(key)
    }
}

/// The field names a document lists in `ignoreFields` extensions at document, body or
/// query-result level, as written (CURIEs or plain keys).
pub fn ignore_fields_of(document: &Value) -> Vec<String> {
    let body = document.get("epcisBody");
    let results = body.and_then(|b| b.get("queryResults"));
    let levels = [
        Some(document),
        body,
        results,
        results.and_then(|r| r.get("resultsBody")),
    ];
    let mut out = Vec::new();
    for map in levels.into_iter().flatten().filter_map(Value::as_object) {
        for (key, value) in map {
            if key == "ignoreFields" || key.ends_with(":ignoreFields") {
                out.extend(
                    as_list(value)
                        .iter()
                        .filter_map(|v| v.as_str())
                        .map(str::to_owned),
                );
            }
        }
    }
    out
}

/// The events of an EPCIS document (`epcisBody.eventList` or `epcisBody.event`), of a query
/// document (`epcisBody.queryResults.resultsBody.eventList`) or a bare event, each with its
/// context (the document's, extended by the event's own `@context`).
pub fn events_of(document: &Value) -> Vec<(&Value, Context)> {
    let ctx = Context::from_document(document);
    let body = document.get("epcisBody");
    let list = body.and_then(|b| b.get("eventList")).or_else(|| {
        body.and_then(|b| b.get("queryResults"))
            .and_then(|q| q.get("resultsBody"))
            .and_then(|r| r.get("eventList"))
    });
    let events: Vec<&Value> = match (list, body.and_then(|b| b.get("event"))) {
        (Some(Value::Array(events)), _) => events.iter().collect(),
        (_, Some(event)) => vec![event],
        _ if body.is_none()
            && document
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("Event")) =>
        {
            vec![document]
        }
        _ => Vec::new(),
    };
    events
        .into_iter()
        .map(|event| {
            // A bare event's own @context already is the document context.
            let event_ctx = match event.get("@context") {
                Some(c) if !std::ptr::eq(event, document) => ctx.with_context(c),
                _ => ctx.clone(),
            };
            (event, event_ctx)
        })
        .collect()
}

/// The event hash ID: `ni:///sha-256;{hex of SHA-256(pre-hash)}?ver=CBV2.0`.
pub fn event_hash_id(event: &Value, context: &Context) -> Result<String, HashError> {
    Ok(hash_id_of_prehash(&prehash(event, context)?))
}

/// The hash ID of an already computed pre-hash string.
pub fn hash_id_of_prehash(prehash: &str) -> String {
    let digest = Sha256::digest(prehash.as_bytes());
    format!("ni:///sha-256;{}?ver={CBV_VERSION}", hex::encode(digest))
}

/// The canonical pre-hash string of one EPCIS 2.0 JSON-LD event.
pub fn prehash(event: &Value, context: &Context) -> Result<String, HashError> {
    let obj = event.as_object().ok_or(HashError::NotAnObject)?;
    let event_type = obj
        .get("type")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(HashError::MissingType)?;
    let p = Prehasher { ctx: context };
    let mut out = format!("eventType={event_type}");
    for field in EVENT_FIELD_ORDER {
        if let Some(value) = obj.get(*field) {
            out.push_str(&p.event_field(field, value)?);
        }
    }
    if let Some(ilmd) = obj.get("ilmd") {
        let map = ilmd.as_object().ok_or_else(|| shape("ilmd", "an object"))?;
        let children = p.generic_children(map, &[])?;
        if !children.is_empty() {
            out.push_str("ilmd");
            out.push_str(&children);
        }
    }
    out.push_str(&p.generic_children_where(obj, is_standard_event_key)?);
    Ok(out)
}

/// Standard event fields in the canonical property order.
const EVENT_FIELD_ORDER: &[&str] = &[
    "eventTime",
    "eventTimeZoneOffset",
    "certificationInfo",
    "parentID",
    "epcList",
    "inputEPCList",
    "childEPCs",
    "quantityList",
    "childQuantityList",
    "inputQuantityList",
    "outputEPCList",
    "outputQuantityList",
    "action",
    "transformationID",
    "bizStep",
    "disposition",
    "persistentDisposition",
    "readPoint",
    "bizLocation",
    "bizTransactionList",
    // The vectors put destinations before sources (CBV 2.0's table lists sources first).
    "destinationList",
    "sourceList",
    "sensorElementList",
];

/// Event keys written elsewhere (`type` as `eventType`, `ilmd`) or left out of the hash: the
/// hash must not depend on when or by whom an event was recorded, nor change when an error
/// declaration is added later.
const OTHER_STANDARD_EVENT_KEYS: &[&str] =
    &["type", "ilmd", "eventID", "recordTime", "errorDeclaration"];

/// Whether an event-level key is not a user extension. JSON-LD keywords (`@context`, `@id`) are
/// document structure, not event data.
fn is_standard_event_key(key: &str) -> bool {
    key.starts_with('@')
        || EVENT_FIELD_ORDER.contains(&key)
        || OTHER_STANDARD_EVENT_KEYS.contains(&key)
}

const SENSOR_METADATA_ORDER: &[&str] = &[
    "time",
    "startTime",
    "endTime",
    "deviceID",
    "deviceMetadata",
    "rawData",
    "dataProcessingMethod",
    "bizRules",
];

const SENSOR_REPORT_ORDER: &[&str] = &[
    "type",
    "exception",
    "deviceID",
    "deviceMetadata",
    "rawData",
    "dataProcessingMethod",
    "time",
    "microorganism",
    "chemicalSubstance",
    "value",
    "component",
    "stringValue",
    "booleanValue",
    "hexBinaryValue",
    "uriValue",
    "minValue",
    "maxValue",
    "meanValue",
    "sDev",
    "percRank",
    "percValue",
    "uom",
    "coordinateReferenceSystem",
];

const QUANTITY_ORDER: &[&str] = &["epcClass", "quantity", "uom"];

const TIME_FIELDS: &[&str] = &["eventTime", "time", "startTime", "endTime"];

/// A controlled vocabulary: the bare terms the EPCIS 2.0 JSON-LD context defines for a field,
/// and the IRI prefix they expand to.
struct Vocabulary {
    iri_prefix: &'static str,
    terms: &'static [&'static str],
}

#[rustfmt::skip]
const BIZ_STEPS: Vocabulary = Vocabulary {
    iri_prefix: "https://ref.gs1.org/cbv/BizStep-",
    terms: &[
        "accepting", "arriving", "assembling", "collecting", "commissioning", "consigning",
        "creating_class_instance", "cycle_counting", "decommissioning", "departing", "destroying",
        "disassembling", "dispensing", "encoding", "entering_exiting", "holding", "inspecting",
        "installing", "killing", "loading", "other", "packing", "picking", "receiving", "removing",
        "repackaging", "repairing", "replacing", "reserving", "retail_selling", "sampling",
        "sensor_reporting", "shipping", "staging_outbound", "stock_taking", "stocking", "storing",
        "transporting", "unloading", "unpacking", "void_shipping",
    ],
};

#[rustfmt::skip]
const DISPOSITIONS: Vocabulary = Vocabulary {
    iri_prefix: "https://ref.gs1.org/cbv/Disp-",
    terms: &[
        "active", "available", "completeness_verified", "completeness_inferred", "conformant",
        "container_closed", "container_open", "damaged", "destroyed", "dispensed", "disposed",
        "encoded", "expired", "in_progress", "in_transit", "inactive", "mismatch_instance",
        "mismatch_class", "mismatch_quantity", "needs_replacement", "no_pedigree_match",
        "non_conformant", "non_sellable_other", "partially_dispensed", "recalled", "reserved",
        "retail_sold", "returned", "sellable_accessible", "sellable_not_accessible", "stolen",
        "unavailable", "unknown",
    ],
};

#[rustfmt::skip]
const BIZ_TRANSACTION_TYPES: Vocabulary = Vocabulary {
    iri_prefix: "https://ref.gs1.org/cbv/BTT-",
    terms: &[
        "bol", "cert", "desadv", "inv", "pedigree", "po", "poc", "prodorder", "recadv", "rma",
        "testprd", "testres", "upevt",
    ],
};

const SOURCE_DESTINATION_TYPES: Vocabulary = Vocabulary {
    iri_prefix: "https://ref.gs1.org/cbv/SDT-",
    terms: &["owning_party", "possessing_party", "location"],
};

#[rustfmt::skip]
const MEASUREMENT_TYPES: Vocabulary = Vocabulary {
    iri_prefix: "https://gs1.org/voc/",
    terms: &[
        "AbsoluteHumidity", "AbsorbedDose", "AbsorbedDoseRate", "Acceleration", "Altitude",
        "AmountOfSubstance", "AmountOfSubstancePerUnitVolume", "Angle", "AngularAcceleration",
        "AngularMomentum", "AngularVelocity", "Area", "Capacitance", "Conductance", "Conductivity",
        "Count", "Density", "Dimensionless", "DoseEquivalent", "DoseEquivalentRate",
        "DynamicViscosity", "ElectricCharge", "ElectricCurrent", "ElectricCurrentDensity",
        "ElectricFieldStrength", "Energy", "Exposure", "Force", "Frequency", "Illuminance",
        "Inductance", "Irradiance", "KinematicViscosity", "Length", "LinearMomentum", "Luminance",
        "LuminousFlux", "LuminousIntensity", "MagneticFlux", "MagneticFluxDensity",
        "MagneticVectorPotential", "Mass", "MassConcentration", "MassFlowRate", "MassPerAreaTime",
        "MemoryCapacity", "MolalityOfSolute", "MolarEnergy", "MolarMass", "MolarVolume", "Power",
        "Pressure", "RadiantFlux", "RadiantIntensity", "Radioactivity", "RelativeHumidity",
        "Resistance", "Resistivity", "SolidAngle", "SpecificVolume", "Speed", "SurfaceDensity",
        "SurfaceTension", "Temperature", "Time", "Torque", "Voltage", "Volume", "VolumeFlowRate",
        "VolumeFraction", "VolumetricFlux", "Wavenumber",
    ],
};

const SENSOR_EXCEPTIONS: Vocabulary = Vocabulary {
    iri_prefix: "https://gs1.org/voc/",
    terms: &["ALARM_CONDITION", "ERROR_CONDITION"],
};

#[rustfmt::skip]
const COMPONENTS: Vocabulary = Vocabulary {
    iri_prefix: "https://ref.gs1.org/cbv/Comp-",
    terms: &[
        "x", "y", "z", "axial_distance", "azimuth", "height", "spherical_radius", "polar_angle",
        "elevation_angle", "easting", "northing", "latitude", "longitude", "altitude",
    ],
};

/// Pre-CBV-2.0 vocabulary URNs and the web URI prefixes that replace them.
const VOCABULARY_URNS: &[(&str, &str)] = &[
    (
        "urn:epcglobal:cbv:bizstep:",
        "https://ref.gs1.org/cbv/BizStep-",
    ),
    ("urn:epcglobal:cbv:disp:", "https://ref.gs1.org/cbv/Disp-"),
    ("urn:epcglobal:cbv:btt:", "https://ref.gs1.org/cbv/BTT-"),
    ("urn:epcglobal:cbv:sdt:", "https://ref.gs1.org/cbv/SDT-"),
    ("urn:epcglobal:cbv:er:", "https://ref.gs1.org/cbv/ER-"),
];

fn shape(field: &str, expected: &'static str) -> HashError {
    HashError::Shape {
        field: field.to_owned(),
        expected,
    }
}

/// JSON-LD `@set` containers treat a single value like a one-element array.
fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// Sorts and concatenates pre-hash parts.
fn sorted_concat(mut parts: Vec<String>) -> String {
    parts.sort();
    parts.concat()
}

struct Prehasher<'a> {
    ctx: &'a Context,
}

impl Prehasher<'_> {
    fn event_field(&self, field: &str, value: &Value) -> Result<String, HashError> {
        match field {
            "epcList" | "inputEPCList" | "childEPCs" | "outputEPCList" => {
                let mut parts = Vec::new();
                for epc in as_list(value) {
                    if let Some(v) = self.scalar(field, epc)? {
                        parts.push(format!("epc={v}"));
                    }
                }
                Ok(named_list(field, parts))
            }
            "quantityList" | "childQuantityList" | "inputQuantityList" | "outputQuantityList" => {
                let mut parts = Vec::new();
                for element in as_list(value) {
                    let map = element
                        .as_object()
                        .ok_or_else(|| shape(field, "an array of quantity objects"))?;
                    let body = self.ordered(field, map, QUANTITY_ORDER)?;
                    if !body.is_empty() {
                        parts.push(format!("quantityElement{body}"));
                    }
                }
                Ok(named_list(field, parts))
            }
            "certificationInfo" => {
                let mut parts = Vec::new();
                for info in as_list(value) {
                    if let Some(v) = self.scalar(field, info)? {
                        parts.push(format!("certificationInfo={v}"));
                    }
                }
                Ok(sorted_concat(parts))
            }
            "bizStep" => self.pair(field, self.vocab(field, value, &BIZ_STEPS)?),
            "disposition" => self.pair(field, self.vocab(field, value, &DISPOSITIONS)?),
            "persistentDisposition" => self.persistent_disposition(value),
            "readPoint" | "bizLocation" => self.location(field, value),
            "bizTransactionList" => {
                self.typed_list(field, value, "bizTransaction", &BIZ_TRANSACTION_TYPES)
            }
            "sourceList" => self.typed_list(field, value, "source", &SOURCE_DESTINATION_TYPES),
            "destinationList" => {
                self.typed_list(field, value, "destination", &SOURCE_DESTINATION_TYPES)
            }
            "sensorElementList" => self.sensor_elements(value),
            _ => {
                let v = if TIME_FIELDS.contains(&field) {
                    self.timestamp(field, value)?
                } else {
                    self.scalar(field, value)?
                };
                self.pair(field, v)
            }
        }
    }

    fn pair(&self, field: &str, value: Option<String>) -> Result<String, HashError> {
        Ok(value.map_or_else(String::new, |v| format!("{field}={v}")))
    }

    /// A scalar value in canonical form; `None` for null and blank strings, which count as absent.
    fn scalar(&self, field: &str, value: &Value) -> Result<Option<String>, HashError> {
        let text = match value {
            Value::Null => return Ok(None),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.trim().to_owned(),
            Value::Array(_) | Value::Object(_) => return Err(shape(field, "a single value")),
        };
        if text.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.canonical_value(&text)))
    }

    fn canonical_value(&self, text: &str) -> String {
        let text = self.ctx.expand_value(text);
        let text = VOCABULARY_URNS
            .iter()
            .find_map(|(urn, web)| text.strip_prefix(urn).map(|rest| format!("{web}{rest}")))
            .unwrap_or(text);
        if let Some(number) = canonical_number(&text) {
            return number;
        }
        canonical_identifier(&text).unwrap_or(text)
    }

    /// A value of a vocabulary-typed field: bare standard terms expand to their URI.
    fn vocab(
        &self,
        field: &str,
        value: &Value,
        vocabulary: &Vocabulary,
    ) -> Result<Option<String>, HashError> {
        if let Some(term) = value.as_str().map(str::trim)
            && vocabulary.terms.contains(&term)
        {
            return Ok(Some(format!("{}{term}", vocabulary.iri_prefix)));
        }
        self.scalar(field, value)
    }

    fn timestamp(&self, field: &str, value: &Value) -> Result<Option<String>, HashError> {
        match value {
            Value::Null => Ok(None),
            Value::String(s) => {
                normalise_timestamp(s.trim())
                    .map(Some)
                    .map_err(|reason| HashError::Timestamp {
                        field: field.to_owned(),
                        value: s.clone(),
                        reason,
                    })
            }
            _ => Err(shape(field, "a date-time string")),
        }
    }

    /// Fields of `map` in `order` (with timestamps and vocabularies where they apply), then its
    /// other fields as sorted extensions.
    fn ordered(
        &self,
        context: &str,
        map: &Map<String, Value>,
        order: &[&str],
    ) -> Result<String, HashError> {
        let mut out = String::new();
        for field in order {
            let Some(value) = map.get(*field) else {
                continue;
            };
            let v = match (context, *field) {
                (_, f) if TIME_FIELDS.contains(&f) => self.timestamp(f, value)?,
                ("sensorReport", "type") => self.vocab(field, value, &MEASUREMENT_TYPES)?,
                ("sensorReport", "exception") => self.vocab(field, value, &SENSOR_EXCEPTIONS)?,
                ("sensorReport", "component") => self.vocab(field, value, &COMPONENTS)?,
                _ => self.scalar(field, value)?,
            };
            out.push_str(&self.pair(field, v)?);
        }
        out.push_str(&self.generic_children(map, order)?);
        Ok(out)
    }

    fn persistent_disposition(&self, value: &Value) -> Result<String, HashError> {
        let field = "persistentDisposition";
        let map = value.as_object().ok_or_else(|| shape(field, "an object"))?;
        let mut out = String::new();
        for part in ["set", "unset"] {
            let mut parts = Vec::new();
            for d in map.get(part).map(as_list).unwrap_or_default() {
                if let Some(v) = self.vocab(part, d, &DISPOSITIONS)? {
                    parts.push(format!("{part}={v}"));
                }
            }
            out.push_str(&sorted_concat(parts));
        }
        out.push_str(&self.generic_children(map, &["set", "unset"])?);
        Ok(if out.is_empty() {
            out
        } else {
            format!("{field}{out}")
        })
    }

    /// `readPoint` / `bizLocation`: the location `id`, then extensions of the location.
    fn location(&self, field: &str, value: &Value) -> Result<String, HashError> {
        let body = match value {
            Value::Object(map) => self.ordered(field, map, &["id"])?,
            other => self.pair("id", self.scalar(field, other)?)?,
        };
        Ok(if body.is_empty() {
            body
        } else {
            format!("{field}{body}")
        })
    }

    /// Business transaction, source and destination lists: each element is `type=…` followed
    /// by its identifier, and elements are sorted.
    fn typed_list(
        &self,
        field: &str,
        value: &Value,
        id_key: &str,
        types: &Vocabulary,
    ) -> Result<String, HashError> {
        let mut parts = Vec::new();
        for element in as_list(value) {
            let map = element
                .as_object()
                .ok_or_else(|| shape(field, "an array of objects"))?;
            let mut part = String::new();
            if let Some(t) = map.get("type") {
                part.push_str(&self.pair("type", self.vocab("type", t, types)?)?);
            }
            if let Some(id) = map.get(id_key) {
                part.push_str(&self.pair(id_key, self.scalar(id_key, id)?)?);
            }
            part.push_str(&self.generic_children(map, &["type", id_key])?);
            if !part.is_empty() {
                parts.push(part);
            }
        }
        Ok(named_list(field, parts))
    }

    fn sensor_elements(&self, value: &Value) -> Result<String, HashError> {
        let field = "sensorElementList";
        let mut elements = Vec::new();
        for element in as_list(value) {
            let map = element
                .as_object()
                .ok_or_else(|| shape(field, "an array of sensor element objects"))?;
            let mut body = String::new();
            if let Some(metadata) = map.get("sensorMetadata") {
                let m = metadata
                    .as_object()
                    .ok_or_else(|| shape("sensorMetadata", "an object"))?;
                let inner = self.ordered("sensorMetadata", m, SENSOR_METADATA_ORDER)?;
                if !inner.is_empty() {
                    body.push_str("sensorMetadata");
                    body.push_str(&inner);
                }
            }
            let mut reports = Vec::new();
            for report in map.get("sensorReport").map(as_list).unwrap_or_default() {
                let r = report
                    .as_object()
                    .ok_or_else(|| shape("sensorReport", "an array of objects"))?;
                let inner = self.ordered("sensorReport", r, SENSOR_REPORT_ORDER)?;
                if !inner.is_empty() {
                    reports.push(format!("sensorReport{inner}"));
                }
            }
            body.push_str(&sorted_concat(reports));
            body.push_str(&self.generic_children(map, &["sensorMetadata", "sensorReport"])?);
            if !body.is_empty() {
                elements.push(format!("sensorElement{body}"));
            }
        }
        Ok(named_list(field, elements))
    }

    /// User extensions (and any other non-standard fields) of `map` except `handled`, sorted.
    fn generic_children(
        &self,
        map: &Map<String, Value>,
        handled: &[&str],
    ) -> Result<String, HashError> {
        self.generic_children_where(map, |key| handled.contains(&key))
    }

    fn generic_children_where(
        &self,
        map: &Map<String, Value>,
        is_handled: impl Fn(&str) -> bool,
    ) -> Result<String, HashError> {
        let mut parts = Vec::new();
        for (key, value) in map {
            if is_handled(key) {
                continue;
            }
            let expanded = self.ctx.expand_key(key);
            if self.ctx.is_ignored(key, &expanded) {
                continue;
            }
            self.generic(&expanded, value, &mut parts)?;
        }
        Ok(sorted_concat(parts))
    }

    fn generic(&self, key: &str, value: &Value, parts: &mut Vec<String>) -> Result<(), HashError> {
        match value {
            Value::Null => {}
            Value::Array(items) => {
                for item in items {
                    self.generic(key, item, parts)?;
                }
            }
            Value::Object(map) => parts.push(format!("{key}{}", self.generic_children(map, &[])?)),
            scalar => match self.scalar(key, scalar)? {
                Some(v) => parts.push(format!("{key}={v}")),
                None => parts.push(key.to_owned()),
            },
        }
        Ok(())
    }
}

fn named_list(name: &str, parts: Vec<String>) -> String {
    if parts.is_empty() {
        String::new()
    } else {
        format!("{name}{}", sorted_concat(parts))
    }
}

/// UTC with millisecond precision; sub-millisecond digits round half up (`.1415` → `.142`).
fn normalise_timestamp(value: &str) -> Result<String, String> {
    let parsed = DateTime::parse_from_rfc3339(value).map_err(|e| e.to_string())?;
    let utc = parsed.with_timezone(&Utc);
    let below_ms = utc.timestamp_subsec_nanos() % 1_000_000;
    let round_up = if below_ms >= 500_000 { 1_000_000 } else { 0 };
    let rounded = utc
        .checked_add_signed(TimeDelta::nanoseconds(round_up - i64::from(below_ms)))
        .ok_or_else(|| "out of range".to_owned())?;
    Ok(rounded.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// Numbers as the CBV vectors write them: integral values without a fraction, others in the
/// shortest round-trip form (scientific notation below 1e-4, like the reference implementation,
/// so XML text and JSON numbers of the same value agree). `None` if `text` is not a decimal
/// number.
fn canonical_number(text: &str) -> Option<String> {
    if !looks_numeric(text) {
        return None;
    }
    let x: f64 = text.parse().ok()?;
    if !x.is_finite() {
        return None;
    }
    if x.fract() == 0.0 {
        return Some(if x == 0.0 {
            "0".to_owned()
        } else {
            format!("{x:.0}")
        });
    }
    // `{:e}` gives the shortest round-trip digits, e.g. "-1.5e-7" or "4.2698334e1".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e')?;
    let exp: i32 = exp.parse().ok()?;
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    if !(-4..16).contains(&exp) {
        let exp_sign = if exp < 0 { '-' } else { '+' };
        return Some(format!("{sign}{mantissa}e{exp_sign}{:02}", exp.abs()));
    }
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let fixed = if exp >= 0 {
        let split = (exp + 1) as usize;
        let int_part = format!("{:0<split$}", &digits[..split.min(digits.len())]);
        let frac = digits.get(split..).unwrap_or("");
        format!("{int_part}.{frac}")
    } else {
        format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
    };
    Some(format!("{sign}{fixed}"))
}

/// `[+-]digits[.digits][e[+-]digits]` with at least one mantissa digit.
fn looks_numeric(text: &str) -> bool {
    let s = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

/// EPC URIs and GS1 Digital Link URIs as constrained canonical Digital Links. Values that do
/// not parse as either are left as they are, like any other URI.
fn canonical_identifier(text: &str) -> Option<String> {
    let dl = if text
        .get(..8)
        .is_some_and(|h| h.eq_ignore_ascii_case("urn:epc:"))
    {
        epc_urn_to_digital_link(text).ok()?
    } else if text.starts_with("http://") || text.starts_with("https://") {
        DigitalLink::parse(text).ok()?
    } else {
        return None;
    };
    let mut canonical = dl
        .to_canonical()
        .without_qualifier(Qualifier::Cpv)
        .without_qualifier(Qualifier::Srin);
    if canonical.qualifier(Qualifier::Serial).is_some() {
        canonical = canonical.without_qualifier(Qualifier::Lot);
    }
    Some(canonical.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    /// The `shared/conformance` directory: `$TRELLIS_CONFORMANCE_DIR` if set, else the first
    /// `shared/conformance` found next to or above the crate (the repository lives beside
    /// `shared/`).
    pub fn conformance_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("TRELLIS_CONFORMANCE_DIR") {
            return Some(PathBuf::from(dir));
        }
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .flat_map(|a| {
                [
                    a.join("shared/conformance"),
                    a.join("../shared/conformance"),
                ]
            })
            .find(|candidate| candidate.is_dir())
    }

    /// Lines of the GS1 `.prehashes` files that do not hash to the matching `.hashes` line (the
    /// files are corrupted: garbled, truncated, or a copy of another event), checked against
    /// `.hashes` only. The test fails if such a line becomes consistent, so this list cannot go
    /// stale silently.
    const DEFECTIVE_PREHASH_LINES: &[(&str, usize)] = &[
        ("epcisDocWithAllGS1Keys", 1),
        ("epcisDocWithCustomSchemaInContext", 2),
        ("epcisDocWithDefaultSchemaInContext", 2),
    ];

    fn read_lines(path: &Path) -> Option<Vec<String>> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
        Some(lines)
    }

    /// A mismatch report that shows where two long strings part.
    fn diff(what: &str, expected: &str, actual: &str) -> String {
        let common = expected
            .char_indices()
            .zip(actual.chars())
            .find(|((_, e), a)| e != a)
            .map_or(expected.len().min(actual.len()), |((i, _), _)| i);
        let from = expected[..common]
            .char_indices()
            .rev()
            .nth(40)
            .map_or(0, |(i, _)| i);
        format!(
            "{what}: differs at byte {common}\n  expected: …{}\n  actual:   …{}\n  full expected: {expected}\n  full actual:   {actual}",
            &expected[from..],
            actual.get(from..).unwrap_or(actual),
        )
    }

    #[derive(Default)]
    struct Vector {
        jsonld: Option<PathBuf>,
        prehashes: Option<Vec<String>>,
        hashes: Option<Vec<String>>,
    }

    #[test]
    fn cbv_event_hash_vectors() {
        let root = conformance_dir().unwrap_or_else(|| {
            panic!(
                "conformance fixtures not found: set TRELLIS_CONFORMANCE_DIR to the shared/conformance \
                 directory, or keep shared/ beside the repository"
            )
        });
        let dir = root.join("epcis/event-hash");
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        let mut vectors: BTreeMap<String, Vector> = BTreeMap::new();
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let (Some(stem), Some(ext)) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            let v = vectors.entry(stem.to_owned()).or_default();
            match ext {
                "jsonld" => v.jsonld = Some(path.clone()),
                "prehashes" => v.prehashes = read_lines(&path),
                "hashes" => v.hashes = read_lines(&path),
                _ => {}
            }
        }
        assert!(!vectors.is_empty(), "no vectors in {}", dir.display());

        let mut failures = Vec::new();
        let (mut prehash_ok, mut hash_ok, mut events, mut documents) = (0, 0, 0, 0);
        let mut notes = Vec::new();
        for (stem, v) in &vectors {
            if let Some(path) = &v.jsonld {
                documents += 1;
                let text = std::fs::read_to_string(path).expect("read vector");
                let doc: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{stem}.jsonld is not JSON: {e}"));
                let computed: Vec<Result<(String, String), HashError>> = events_of(&doc)
                    .into_iter()
                    .map(|(event, ctx)| {
                        let p = prehash(event, &ctx)?;
                        let h = hash_id_of_prehash(&p);
                        Ok((p, h))
                    })
                    .collect();
                events += computed.len();
                for (i, c) in computed.iter().enumerate() {
                    if let Err(e) = c {
                        failures.push(format!("{stem} event {}: {e} [{}]", i + 1, e.code()));
                    }
                }
                let ok: Vec<(String, String)> =
                    computed.into_iter().filter_map(Result::ok).collect();
                if let Some(expected) = &v.prehashes {
                    if expected.len() != ok.len() {
                        failures.push(format!(
                            "{stem}: {} events, {} expected pre-hashes",
                            ok.len(),
                            expected.len()
                        ));
                    }
                    for (i, (exp, (actual, _))) in expected.iter().zip(&ok).enumerate() {
                        let line = i + 1;
                        if DEFECTIVE_PREHASH_LINES.contains(&(stem.as_str(), line)) {
                            let still_defective = v.hashes.as_ref().is_some_and(|h| {
                                h.get(i).is_some_and(|h| *h != hash_id_of_prehash(exp))
                            });
                            if still_defective {
                                notes.push(format!(
                                    "{stem}.prehashes line {line} is corrupt (does not hash to its .hashes line); checked against .hashes only"
                                ));
                            } else {
                                failures.push(format!(
                                    "{stem}.prehashes line {line} is listed as defective but is now consistent: remove it from DEFECTIVE_PREHASH_LINES"
                                ));
                            }
                        } else if exp == actual {
                            prehash_ok += 1;
                        } else {
                            failures.push(diff(&format!("{stem} pre-hash {line}"), exp, actual));
                        }
                    }
                }
                if let Some(expected) = &v.hashes {
                    if expected.len() != ok.len() {
                        failures.push(format!(
                            "{stem}: {} events, {} expected hashes",
                            ok.len(),
                            expected.len()
                        ));
                    }
                    for (i, (exp, (_, actual))) in expected.iter().zip(&ok).enumerate() {
                        if exp == actual {
                            hash_ok += 1;
                        } else {
                            failures.push(format!(
                                "{stem} hash {}: expected {exp}, got {actual}\n  pre-hash: {}",
                                i + 1,
                                ok[i].0
                            ));
                        }
                    }
                }
            } else if let (Some(pre), Some(hashes)) = (&v.prehashes, &v.hashes) {
                // No input document: the vector still fixes the hashing of a pre-hash string.
                if pre.len() != hashes.len() {
                    failures.push(format!(
                        "{stem}: {} pre-hashes but {} hashes",
                        pre.len(),
                        hashes.len()
                    ));
                }
                for (i, (p, h)) in pre.iter().zip(hashes).enumerate() {
                    if hash_id_of_prehash(p) == *h {
                        hash_ok += 1;
                    } else {
                        failures.push(format!(
                            "{stem} line {}: pre-hash does not hash to {h}",
                            i + 1
                        ));
                    }
                }
            } else {
                notes.push(format!(
                    "{stem}: only a .{} file and no input document, so nothing to compute",
                    if v.prehashes.is_some() {
                        "prehashes"
                    } else {
                        "hashes"
                    }
                ));
            }
        }
        println!(
            "event-hash vectors: {} files, {documents} documents, {events} events, {prehash_ok} pre-hashes and {hash_ok} hashes matched",
            vectors.len()
        );
        for note in &notes {
            println!("note: {note}");
        }
        assert!(
            failures.is_empty(),
            "{} mismatches:\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }

    #[test]
    fn timestamps_round_half_up_to_utc_milliseconds() {
        let t = |s: &str| normalise_timestamp(s).unwrap();
        assert_eq!(t("2023-02-02T11:04:03.1415Z"), "2023-02-02T11:04:03.142Z");
        assert_eq!(t("2023-02-02T11:04:03.1414Z"), "2023-02-02T11:04:03.141Z");
        assert_eq!(t("2023-02-02T11:04:03.1405Z"), "2023-02-02T11:04:03.141Z");
        assert_eq!(t("2020-03-04T11:00:30+01:00"), "2020-03-04T10:00:30.000Z");
        assert_eq!(
            t("2005-04-03T20:33:31.116000-06:00"),
            "2005-04-04T02:33:31.116Z"
        );
        assert_eq!(t("2019-12-31T23:59:59.9996Z"), "2020-01-01T00:00:00.000Z");
        assert!(normalise_timestamp("2020-03-04T11:00:30").is_err());
        let e = prehash(
            &json!({"type": "ObjectEvent", "eventTime": "yesterday"}),
            &Context::new(),
        )
        .unwrap_err();
        assert_eq!(e.code(), "epcis_timestamp");
    }

    #[test]
    fn numbers_lose_trailing_zeros() {
        let n = |s: &str| canonical_number(s);
        assert_eq!(n("452.0").as_deref(), Some("452"));
        assert_eq!(n("0.50").as_deref(), Some("0.5"));
        assert_eq!(n("+12.10").as_deref(), Some("12.1"));
        assert_eq!(n("-0.0").as_deref(), Some("0"));
        assert_eq!(n("1e20").as_deref(), Some("100000000000000000000"));
        assert_eq!(n("0.0001").as_deref(), Some("0.0001"));
        assert_eq!(n("0.00001").as_deref(), Some("1e-05"));
        assert_eq!(n("-1.5e-7").as_deref(), Some("-1.5e-07"));
        assert_eq!(n("123456.789").as_deref(), Some("123456.789"));
        assert_eq!(n("42.698334").as_deref(), Some("42.698334"));
        assert_eq!(n("1.5e3").as_deref(), Some("1500"));
        assert_eq!(n("12.5e1").as_deref(), Some("125"));
        assert_eq!(n("2.5e1").as_deref(), Some("25"));
        assert_eq!(n("1234.5e-2").as_deref(), Some("12.345"));
        for not_numbers in [
            "", ".", "+", "1e", "e5", "inf", "NaN", "1.2.3", "+01:00", "0x10", "1_000",
        ] {
            assert_eq!(n(not_numbers), None, "{not_numbers}");
        }
    }

    #[test]
    fn malformed_events_are_errors_not_panics() {
        let ctx = Context::new();
        let code = |v: Value| prehash(&v, &ctx).unwrap_err().code();
        assert_eq!(code(json!([1])), "epcis_event_not_object");
        assert_eq!(
            code(json!({"eventTime": "2020-01-01T00:00:00Z"})),
            "epcis_event_type"
        );
        assert_eq!(
            code(json!({"type": "ObjectEvent", "epcList": [{"a": 1}]})),
            "epcis_field_shape"
        );
        assert_eq!(
            code(json!({"type": "ObjectEvent", "quantityList": ["x"]})),
            "epcis_field_shape"
        );
        assert_eq!(
            code(json!({"type": "ObjectEvent", "eventTime": 5})),
            "epcis_field_shape"
        );
    }

    #[test]
    fn event_level_context_and_ignored_fields() {
        let doc = json!({
            "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld", {"ex": "https://ex.org/a/"}],
            "epcisBody": {"eventList": [
                {"@context": {"ex": "https://ex.org/b/"}, "type": "ObjectEvent", "ex:f": "ex:v", "rdfs:comment": "x"},
                {"type": "ObjectEvent", "ex:f": "1.50", "eventID": "urn:uuid:1", "recordTime": "2020-01-01T00:00:00Z"}
            ]}
        });
        let events = events_of(&doc);
        let pre: Vec<String> = events.iter().map(|(e, c)| prehash(e, c).unwrap()).collect();
        assert_eq!(
            pre[0],
            "eventType=ObjectEvent{https://ex.org/b/}f=https://ex.org/b/v"
        );
        assert_eq!(pre[1], "eventType=ObjectEvent{https://ex.org/a/}f=1.5");
        let ctx = Context::new()
            .with_prefix("ex", "https://ex.org/")
            .ignore_field("ex:f");
        assert_eq!(
            prehash(&doc["epcisBody"]["eventList"][1], &ctx).unwrap(),
            "eventType=ObjectEvent"
        );
    }

    #[test]
    fn identifiers_become_constrained_canonical_digital_links() {
        let c = |s: &str| canonical_identifier(s);
        assert_eq!(
            c("https://example.com/gtin/09780345418913/21/765tz?abc=211121").as_deref(),
            Some("https://id.gs1.org/01/09780345418913/21/765tz")
        );
        assert_eq!(
            c("https://example.com/01/09780345418913/22/V1/10/L1/21/S1").as_deref(),
            Some("https://id.gs1.org/01/09780345418913/21/S1")
        );
        assert_eq!(
            c("https://example.com/01/09780345418913/22/V1/10/L1").as_deref(),
            Some("https://id.gs1.org/01/09780345418913/10/L1")
        );
        assert_eq!(c("http://transaction.acme.com/po/12345678"), None);
        assert_eq!(c("urn:epcglobal:cbv:bt:0614141073467:1152"), None);
        assert_eq!(c("urn:epc:id:usdod:2S194.12345678901"), None);
    }
}
