//! The `trace` contract: master data (products, locations, lots), EPCIS event anchoring with
//! their links (transformation, aggregation), two-sided custody handover, cold-chain sensor
//! reports judged against the product's ranges, recalls that follow the links, and
//! hash-anchored certificates. Deterministic: block time only, integer arithmetic.

use std::collections::{BTreeSet, VecDeque};

use chain_core::contract::{CallContext, Contract, ContractError, parse_args};
use chain_core::system::{self, Member};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::domain::*;
use crate::ids::{self, Epc};

pub const NAME: &str = "trace";
/// Members with this role (or `org_admin`) act for their organisation in traceability.
pub const ROLE_OPERATOR: &str = "trace.operator";
/// IoT gateways report sensor readings for any lot.
pub const ROLE_GATEWAY: &str = "iot.gateway";
/// A regulator may recall any lot.
pub const ROLE_REGULATOR: &str = "regulator";
/// Upper bounds that keep one transaction's work bounded.
pub const MAX_EVENTS_PER_CAPTURE: usize = 10_000;
pub const MAX_READINGS_PER_REPORT: usize = 2_000;
pub const MAX_RECALL_LOTS: usize = 20_000;

pub struct TraceContract;

impl Contract for TraceContract {
    fn name(&self) -> &'static str {
        NAME
    }
    fn methods(&self) -> &'static [&'static str] {
        &[
            "register_product",
            "register_location",
            "create_lot",
            "capture",
            "offer_handover",
            "accept_handover",
            "reject_handover",
            "cancel_handover",
            "sensor_report",
            "recall",
            "anchor_certificate",
        ]
    }
    fn call(
        &self,
        ctx: &mut CallContext<'_>,
        method: &str,
        args: &[u8],
    ) -> Result<(), ContractError> {
        match method {
            "register_product" => register_product(ctx, parse_args(args)?),
            "register_location" => register_location(ctx, parse_args(args)?),
            "create_lot" => create_lot(ctx, parse_args(args)?),
            "capture" => capture(ctx, parse_args(args)?),
            "offer_handover" => offer_handover(ctx, parse_args(args)?),
            "accept_handover" => answer_handover(ctx, parse_args(args)?, Answer::Accept),
            "reject_handover" => answer_handover(ctx, parse_args(args)?, Answer::Reject),
            "cancel_handover" => answer_handover(ctx, parse_args(args)?, Answer::Cancel),
            "sensor_report" => sensor_report(ctx, parse_args(args)?),
            "recall" => recall(ctx, parse_args(args)?),
            "anchor_certificate" => anchor_certificate(ctx, parse_args(args)?),
            other => Err(ContractError::new(
                "unknown_method",
                format!("trace has no method {other}"),
            )),
        }
    }
}

fn operator(ctx: &CallContext<'_>) -> Result<Member, ContractError> {
    let m = system::sender_member(ctx)?;
    if m.has_role(ROLE_OPERATOR) || m.has_role(system::ROLE_ORG_ADMIN) {
        Ok(m)
    } else {
        Err(ContractError::not_permitted(format!(
            "member {} needs role `{ROLE_OPERATOR}` or `{}`",
            m.id(),
            system::ROLE_ORG_ADMIN
        )))
    }
}

fn invalid(code: &str, message: impl Into<String>) -> ContractError {
    ContractError::new(code, message)
}

fn text(field: &str, v: &str, max: usize) -> Result<(), ContractError> {
    if v.len() > max || v.chars().any(char::is_control) {
        return Err(ContractError::invalid_args(format!(
            "{field} must be at most {max} bytes without control characters"
        )));
    }
    Ok(())
}

fn required(field: &str, v: &str, max: usize) -> Result<(), ContractError> {
    if v.trim().is_empty() {
        return Err(ContractError::invalid_args(format!("{field} is required")));
    }
    text(field, v, max)
}

/// A decimal measurement to hundredths, rejecting values no sensor produces.
fn hundredths(field: &str, v: f64) -> Result<i64, ContractError> {
    if !v.is_finite() || v.abs() > 1.0e6 {
        return Err(ContractError::invalid_args(format!(
            "{field} must be a finite number"
        )));
    }
    Ok((v * 100.0).round() as i64)
}

fn range(field: &str, r: Option<[f64; 2]>) -> Result<Option<Range>, ContractError> {
    let Some([lo, hi]) = r else {
        return Ok(None);
    };
    let (min, max) = (hundredths(field, lo)?, hundredths(field, hi)?);
    if min > max {
        return Err(ContractError::invalid_args(format!(
            "{field}: the minimum is above the maximum"
        )));
    }
    Ok(Some(Range { min, max }))
}

fn lot_ref(gtin: &str, lot: &str) -> Result<LotRef, ContractError> {
    let gtin = ids::gtin14(gtin)?;
    ids::check_lot(lot)?;
    Ok(LotRef {
        gtin,
        lot: lot.to_string(),
    })
}

fn load_lot(ctx: &CallContext<'_>, r: &LotRef) -> Result<Lot, ContractError> {
    ctx.get_json::<Lot>(&r.state_key())?.ok_or_else(|| {
        ContractError::new(
            "unknown_lot",
            format!("no lot {} of GTIN {}", r.lot, r.gtin),
        )
    })
}

fn new_lot(ctx: &CallContext<'_>, r: &LotRef, org: &str) -> Lot {
    Lot {
        gtin: r.gtin.clone(),
        lot: r.lot.clone(),
        owner: org.to_string(),
        custodian: org.to_string(),
        status: LotStatus::Ok,
        produced_ms: None,
        expiry_ms: None,
        location: None,
        quantity: None,
        inputs: Vec::new(),
        outputs: Vec::new(),
        units: Vec::new(),
        excursions: Vec::new(),
        excursion_count: 0,
        recall: None,
        disposition: String::new(),
        created_height: ctx.block.height,
    }
}

// ------------------------------------------------------------------------------ master data

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductArgs {
    gtin: String,
    name: String,
    #[serde(default)]
    name_zh: String,
    #[serde(default)]
    brand: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    origin: String,
    /// Allowed temperature, °C: `[min, max]`.
    #[serde(default)]
    temperature_c: Option<[f64; 2]>,
    /// Allowed relative humidity, %: `[min, max]`.
    #[serde(default)]
    humidity_pct: Option<[f64; 2]>,
    #[serde(default)]
    shelf_life_days: Option<u32>,
}

fn register_product(ctx: &mut CallContext<'_>, a: ProductArgs) -> Result<(), ContractError> {
    let m = operator(ctx)?;
    let gtin = ids::gtin14(&a.gtin)?;
    required("name", &a.name, 200)?;
    text("name_zh", &a.name_zh, 200)?;
    text("brand", &a.brand, 200)?;
    text("description", &a.description, 2000)?;
    if !(a.origin.is_empty()
        || a.origin.len() == 2 && a.origin.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(ContractError::invalid_args(
            "origin must be an ISO 3166-1 alpha-2 country code such as CN",
        ));
    }
    let key = product_key(&gtin);
    let existing = ctx.get_json::<Product>(&key)?;
    if let Some(p) = &existing
        && p.owner != m.org
    {
        return Err(ContractError::not_permitted(format!(
            "GTIN {gtin} belongs to {}",
            p.owner
        )));
    }
    let p = Product {
        gtin: gtin.clone(),
        name: a.name,
        name_zh: a.name_zh,
        brand: a.brand,
        description: a.description,
        origin: a.origin,
        owner: m.org.clone(),
        temperature: range("temperature_c", a.temperature_c)?,
        humidity: range("humidity_pct", a.humidity_pct)?,
        shelf_life_days: a.shelf_life_days,
        registered_height: existing.map_or(ctx.block.height, |p| p.registered_height),
    };
    ctx.set_json(&key, &p)?;
    ctx.emit("product", &json!({"gtin": gtin, "owner": m.org}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationArgs {
    gln: String,
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    country: String,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    lon: Option<f64>,
}

fn register_location(ctx: &mut CallContext<'_>, a: LocationArgs) -> Result<(), ContractError> {
    let m = operator(ctx)?;
    let gln = ids::gln13(&a.gln)?;
    required("name", &a.name, 200)?;
    text("kind", &a.kind, 40)?;
    text("address", &a.address, 500)?;
    text("country", &a.country, 2)?;
    let geo = match (a.lat, a.lon) {
        (Some(lat), Some(lon)) => {
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return Err(ContractError::invalid_args(
                    "lat must be within ±90 and lon within ±180",
                ));
            }
            Some(((lat * 1e6).round() as i64, (lon * 1e6).round() as i64))
        }
        (None, None) => None,
        _ => {
            return Err(ContractError::invalid_args(
                "give both lat and lon, or neither",
            ));
        }
    };
    let key = location_key(&gln);
    if let Some(l) = ctx.get_json::<Location>(&key)?
        && l.owner != m.org
    {
        return Err(ContractError::not_permitted(format!(
            "GLN {gln} belongs to {}",
            l.owner
        )));
    }
    let l = Location {
        gln: gln.clone(),
        name: a.name,
        kind: a.kind,
        address: a.address,
        country: a.country,
        geo,
        owner: m.org.clone(),
    };
    ctx.set_json(&key, &l)?;
    ctx.emit("location", &json!({"gln": gln, "owner": m.org}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LotArgs {
    gtin: String,
    lot: String,
    #[serde(default)]
    produced_ms: Option<u64>,
    #[serde(default)]
    expiry_ms: Option<u64>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    quantity: Option<String>,
}

fn create_lot(ctx: &mut CallContext<'_>, a: LotArgs) -> Result<(), ContractError> {
    let m = operator(ctx)?;
    let r = lot_ref(&a.gtin, &a.lot)?;
    let product = ctx
        .get_json::<Product>(&product_key(&r.gtin))?
        .ok_or_else(|| {
            ContractError::new(
                "unknown_product",
                format!("GTIN {} is not registered", r.gtin),
            )
        })?;
    if product.owner != m.org {
        return Err(ContractError::not_permitted(format!(
            "only {} makes lots of GTIN {}",
            product.owner, r.gtin
        )));
    }
    if ctx.get_json::<Lot>(&r.state_key())?.is_some() {
        return Err(invalid(
            "lot_exists",
            format!("lot {} of GTIN {} exists", r.lot, r.gtin),
        ));
    }
    let location = match a.location {
        Some(g) => Some(ids::gln13(&g)?),
        None => None,
    };
    if let Some(q) = &a.quantity {
        text("quantity", q, 40)?;
    }
    let produced = a.produced_ms.unwrap_or(ctx.block.time_ms);
    let expiry = a.expiry_ms.or_else(|| {
        product
            .shelf_life_days
            .map(|d| produced + u64::from(d) * 86_400_000)
    });
    if let Some(e) = expiry
        && e < produced
    {
        return Err(ContractError::invalid_args("expiry is before production"));
    }
    let mut lot = new_lot(ctx, &r, &m.org);
    lot.produced_ms = Some(produced);
    lot.expiry_ms = expiry;
    lot.location = location;
    lot.quantity = a.quantity;
    ctx.set_json(&r.state_key(), &lot)?;
    ctx.emit(
        "lot",
        &json!({"gtin": r.gtin, "lot": r.lot, "owner": m.org}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateArgs {
    id: String,
    kind: String,
    subject: String,
    issuer: String,
    hash: String,
    #[serde(default)]
    uri: String,
    #[serde(default)]
    valid_until_ms: Option<u64>,
}

fn anchor_certificate(ctx: &mut CallContext<'_>, a: CertificateArgs) -> Result<(), ContractError> {
    let m = operator(ctx)?;
    required("id", &a.id, 100)?;
    required("kind", &a.kind, 100)?;
    required("subject", &a.subject, 200)?;
    required("issuer", &a.issuer, 200)?;
    text("uri", &a.uri, 500)?;
    let raw = hex::decode(&a.hash).map_err(|_| ContractError::invalid_args("hash must be hex"))?;
    if !(32..=64).contains(&raw.len()) {
        return Err(ContractError::invalid_args("hash must be 32 to 64 bytes"));
    }
    let key = certificate_key(&a.id);
    if ctx.get_json::<Certificate>(&key)?.is_some() {
        return Err(invalid(
            "certificate_exists",
            format!("certificate {} is already anchored", a.id),
        ));
    }
    let c = Certificate {
        id: a.id,
        kind: a.kind,
        subject: a.subject,
        issuer: a.issuer,
        hash: a.hash.to_lowercase(),
        uri: a.uri,
        valid_until_ms: a.valid_until_ms,
        by: m.id(),
        height: ctx.block.height,
    };
    ctx.set_json(&key, &c)?;
    ctx.emit(
        "certificate",
        &json!({"id": c.id, "subject": c.subject, "kind": c.kind}),
    )
}

// ------------------------------------------------------------------------------ EPCIS capture

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureArgs {
    capture_id: String,
    /// The capturing document's `@context` (namespace prefixes of user extensions).
    #[serde(default)]
    context: Value,
    /// Fields the capturing document declared as not part of its events (`ignoreFields`).
    #[serde(default)]
    ignore_fields: Vec<String>,
    /// Each event's JSON exactly as stored and served; its SHA-256 is anchored.
    events: Vec<String>,
}

fn capture(ctx: &mut CallContext<'_>, a: CaptureArgs) -> Result<(), ContractError> {
    // IoT gateways capture the ObjectEvents of handheld scans.
    let m = match system::sender_member(ctx)? {
        m if m.has_role(ROLE_GATEWAY) => m,
        _ => operator(ctx)?,
    };
    required("capture_id", &a.capture_id, 100)?;
    if a.events.is_empty() || a.events.len() > MAX_EVENTS_PER_CAPTURE {
        return Err(ContractError::invalid_args(format!(
            "a capture holds 1 to {MAX_EVENTS_PER_CAPTURE} events"
        )));
    }
    let mut stored = 0u64;
    let mut duplicates = 0u64;
    // Indexes of the events not stored, so the read model mirrors exactly what the chain kept.
    let mut skipped = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, raw) in a.events.iter().enumerate() {
        let at = |e: ContractError| match e {
            ContractError::Rejected { code, message } => ContractError::Rejected {
                code,
                message: format!("event {i}: {message}"),
            },
            fatal => fatal,
        };
        let event: Value = serde_json::from_str(raw)
            .map_err(|e| ContractError::invalid_args(format!("event {i} is not JSON: {e}")))?;
        let hash_id = ids::event_hash_id(&event, &a.context, &a.ignore_fields).map_err(at)?;
        let hex_id = ids::hash_hex(&hash_id).map_err(at)?;
        let digest = hex::encode(Sha256::digest(raw.as_bytes()));
        // An event with an error declaration has the hash ID of the event it corrects (the
        // declaration is not hashed): it is kept once, as the correction of that event.
        let declares_error = event.get("errorDeclaration").is_some();
        let key = event_key(&hex_id);
        if !seen.insert((hex_id.clone(), declares_error)) {
            duplicates += 1;
            skipped.push(i);
            continue;
        }
        match ctx.get_json::<EventAnchor>(&key)? {
            Some(mut anchor) if declares_error && anchor.error_declaration.is_none() => {
                anchor.error_declaration = Some(digest);
                ctx.set_json(&key, &anchor)?;
                stored += 1;
                continue;
            }
            Some(_) => {
                duplicates += 1;
                skipped.push(i);
                continue;
            }
            None => {}
        }
        apply_event_links(ctx, &event, &m.org).map_err(at)?;
        let anchor = EventAnchor {
            event_hash_id: hash_id,
            error_declaration: declares_error.then(|| digest.clone()),
            digest,
            event_type: event["type"].as_str().unwrap_or_default().to_string(),
            capture_id: a.capture_id.clone(),
            by: m.id(),
            height: ctx.block.height,
        };
        ctx.set_json(&key, &anchor)?;
        stored += 1;
    }
    ctx.emit(
        "captured",
        &json!({"capture_id": a.capture_id, "stored": stored, "duplicates": duplicates,
                "skipped": skipped, "by": m.org}),
    )
}

/// Lots an EPC list or quantity list names (class-level `lgtin`, or items whose lot is known).
fn lots_of(
    ctx: &CallContext<'_>,
    event: &Value,
    epc_field: &str,
    qty_field: &str,
) -> Result<Vec<LotRef>, ContractError> {
    let mut out = BTreeSet::new();
    if let Some(list) = event[epc_field].as_array() {
        for e in list.iter().filter_map(Value::as_str) {
            if let Epc::Item { gtin, serial } = ids::parse_epc(e)?
                && let Some(item) = ctx.get_json::<Item>(&item_key(&gtin, &serial))?
                && let Some(lot) = item.lot
            {
                out.insert(LotRef { gtin, lot });
            }
        }
    }
    if let Some(list) = event[qty_field].as_array() {
        for q in list {
            if let Some(class) = q["epcClass"].as_str()
                && let Epc::Lot(r) = ids::parse_epc(class)?
            {
                out.insert(r);
            }
        }
    }
    Ok(out.into_iter().collect())
}

fn get_or_new_lot(ctx: &CallContext<'_>, r: &LotRef, org: &str) -> Result<Lot, ContractError> {
    Ok(ctx
        .get_json::<Lot>(&r.state_key())?
        .unwrap_or_else(|| new_lot(ctx, r, org)))
}

/// Records what an event says about the links between things: items' lots (ILMD), inputs and
/// outputs of a transformation, contents of logistic units.
fn apply_event_links(
    ctx: &mut CallContext<'_>,
    event: &Value,
    org: &str,
) -> Result<(), ContractError> {
    match event["type"].as_str().unwrap_or_default() {
        "ObjectEvent" => {
            // Commissioning with ILMD names the lot of serialised items.
            if let Some(lot) = event["ilmd"]["cbvmda:lotNumber"]
                .as_str()
                .or_else(|| event["ilmd"]["lotNumber"].as_str())
                && let Some(list) = event["epcList"].as_array()
            {
                ids::check_lot(lot)?;
                for e in list.iter().filter_map(Value::as_str) {
                    if let Epc::Item { gtin, serial } = ids::parse_epc(e)? {
                        let key = item_key(&gtin, &serial);
                        let mut item = ctx.get_json::<Item>(&key)?.unwrap_or(Item {
                            gtin: gtin.clone(),
                            serial,
                            lot: None,
                            unit: None,
                        });
                        item.lot = Some(lot.to_string());
                        ctx.set_json(&key, &item)?;
                        let r = LotRef {
                            gtin,
                            lot: lot.to_string(),
                        };
                        if ctx.get_json::<Lot>(&r.state_key())?.is_none() {
                            let l = new_lot(ctx, &r, org);
                            ctx.set_json(&r.state_key(), &l)?;
                        }
                    }
                }
            }
            Ok(())
        }
        "TransformationEvent" => {
            let inputs = lots_of(ctx, event, "inputEPCList", "inputQuantityList")?;
            let outputs = lots_of(ctx, event, "outputEPCList", "outputQuantityList")?;
            for i in &inputs {
                let mut lot = get_or_new_lot(ctx, i, org)?;
                for o in &outputs {
                    if o != i && !lot.outputs.contains(o) {
                        lot.outputs.push(o.clone());
                    }
                }
                ctx.set_json(&i.state_key(), &lot)?;
            }
            for o in &outputs {
                let mut lot = get_or_new_lot(ctx, o, org)?;
                for i in &inputs {
                    if o != i && !lot.inputs.contains(i) {
                        lot.inputs.push(i.clone());
                    }
                }
                ctx.set_json(&o.state_key(), &lot)?;
            }
            Ok(())
        }
        "AggregationEvent" => {
            let Some(parent) = event["parentID"].as_str() else {
                return Ok(());
            };
            let parent = match ids::parse_epc(parent)? {
                Epc::Unit { sscc } => sscc,
                // Aggregations under other containers (returnable assets…) carry no unit rules.
                _ => return Ok(()),
            };
            let action = event["action"].as_str().unwrap_or_default();
            let children: Vec<String> = event["childEPCs"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let child_lots = lots_of(ctx, event, "childEPCs", "childQuantityList")?;
            let ukey = unit_key(&parent);
            let mut unit = ctx.get_json::<Unit>(&ukey)?.unwrap_or(Unit {
                sscc: parent.clone(),
                ..Unit::default()
            });
            match action {
                "ADD" => {
                    for c in &children {
                        aggregate_child(ctx, &parent, c)?;
                        if !unit.children.contains(c) {
                            unit.children.push(c.clone());
                        }
                    }
                    for r in child_lots {
                        let mut lot = get_or_new_lot(ctx, &r, org)?;
                        if !lot.units.contains(&parent) {
                            lot.units.push(parent.clone());
                            ctx.set_json(&r.state_key(), &lot)?;
                        }
                        if !unit.lots.contains(&r) {
                            unit.lots.push(r);
                        }
                    }
                }
                "DELETE" => {
                    // Without a child list, DELETE empties the unit (EPCIS 2.0 §7.4.3).
                    let removed: Vec<String> = if children.is_empty() {
                        std::mem::take(&mut unit.children)
                    } else {
                        unit.children.retain(|c| !children.contains(c));
                        children
                    };
                    for c in removed {
                        disaggregate_child(ctx, &parent, &c)?;
                    }
                    if event["childQuantityList"]
                        .as_array()
                        .is_none_or(Vec::is_empty)
                        && unit.children.is_empty()
                    {
                        unit.lots.clear();
                    } else {
                        unit.lots.retain(|r| !child_lots.contains(r));
                    }
                }
                _ => return Ok(()),
            }
            ctx.set_json(&ukey, &unit)
        }
        _ => Ok(()),
    }
}

/// A child can be in one unit at a time.
fn aggregate_child(
    ctx: &mut CallContext<'_>,
    parent: &str,
    child: &str,
) -> Result<(), ContractError> {
    match ids::parse_epc(child)? {
        Epc::Item { gtin, serial } => {
            let key = item_key(&gtin, &serial);
            let mut item = ctx.get_json::<Item>(&key)?.unwrap_or(Item {
                gtin,
                serial,
                lot: None,
                unit: None,
            });
            if let Some(u) = &item.unit
                && u != parent
            {
                return Err(invalid(
                    "aggregation_conflict",
                    format!("{child} is already packed in unit {u}"),
                ));
            }
            item.unit = Some(parent.to_string());
            ctx.set_json(&key, &item)
        }
        Epc::Unit { sscc } => {
            if sscc == parent {
                return Err(invalid(
                    "aggregation_conflict",
                    "a unit cannot contain itself",
                ));
            }
            let key = unit_key(&sscc);
            let mut u = ctx.get_json::<Unit>(&key)?.unwrap_or(Unit {
                sscc: sscc.clone(),
                ..Unit::default()
            });
            if let Some(p) = &u.parent
                && p != parent
            {
                return Err(invalid(
                    "aggregation_conflict",
                    format!("unit {sscc} is already inside unit {p}"),
                ));
            }
            u.parent = Some(parent.to_string());
            ctx.set_json(&key, &u)
        }
        _ => Ok(()),
    }
}

fn disaggregate_child(
    ctx: &mut CallContext<'_>,
    parent: &str,
    child: &str,
) -> Result<(), ContractError> {
    match ids::parse_epc(child)? {
        Epc::Item { gtin, serial } => {
            let key = item_key(&gtin, &serial);
            if let Some(mut item) = ctx.get_json::<Item>(&key)?
                && item.unit.as_deref() == Some(parent)
            {
                item.unit = None;
                ctx.set_json(&key, &item)?;
            }
            Ok(())
        }
        Epc::Unit { sscc } => {
            let key = unit_key(&sscc);
            if let Some(mut u) = ctx.get_json::<Unit>(&key)?
                && u.parent.as_deref() == Some(parent)
            {
                u.parent = None;
                ctx.set_json(&key, &u)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

// ------------------------------------------------------------------------------ custody

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LotArg {
    gtin: String,
    lot: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OfferArgs {
    id: String,
    to_org: String,
    lots: Vec<LotArg>,
}

fn offer_handover(ctx: &mut CallContext<'_>, a: OfferArgs) -> Result<(), ContractError> {
    let m = operator(ctx)?;
    required("id", &a.id, 100)?;
    if a.lots.is_empty() || a.lots.len() > 1000 {
        return Err(ContractError::invalid_args(
            "a handover covers 1 to 1000 lots",
        ));
    }
    let org: Option<system::Organisation> =
        ctx.get_json_in(system::NAME, &format!("org/{}", a.to_org))?;
    if !org.is_some_and(|o| o.status == system::Status::Active) {
        return Err(ContractError::not_found(format!(
            "no active organisation {}",
            a.to_org
        )));
    }
    let key = handover_key(&a.id);
    if ctx.get_json::<Handover>(&key)?.is_some() {
        return Err(invalid(
            "handover_exists",
            format!("handover {} exists", a.id),
        ));
    }
    let mut lots = Vec::with_capacity(a.lots.len());
    for l in &a.lots {
        let r = lot_ref(&l.gtin, &l.lot)?;
        let lot = load_lot(ctx, &r)?;
        if lot.custodian != m.org {
            return Err(ContractError::not_permitted(format!(
                "lot {} of GTIN {} is held by {}, not {}",
                r.lot, r.gtin, lot.custodian, m.org
            )));
        }
        if lot.status == LotStatus::Recalled {
            return Err(invalid(
                "lot_recalled",
                format!("lot {} of GTIN {} is recalled", r.lot, r.gtin),
            ));
        }
        lots.push(r);
    }
    // Checked after custody: someone who holds nothing has no handover to address.
    if a.to_org == m.org {
        return Err(ContractError::invalid_args(
            "a handover goes to another organisation",
        ));
    }
    let h = Handover {
        id: a.id.clone(),
        from_org: m.org.clone(),
        to_org: a.to_org.clone(),
        lots,
        units: Vec::new(),
        status: HandoverStatus::Offered,
        offered_by: m.id(),
        answered_by: None,
        offered_height: ctx.block.height,
        answered_height: None,
    };
    ctx.set_json(&key, &h)?;
    ctx.emit(
        "handover_offered",
        &json!({"id": a.id, "from": m.org, "to": a.to_org, "lots": h.lots.len()}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HandoverIdArgs {
    id: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Accept,
    Reject,
    Cancel,
}

fn answer_handover(
    ctx: &mut CallContext<'_>,
    a: HandoverIdArgs,
    answer: Answer,
) -> Result<(), ContractError> {
    let m = operator(ctx)?;
    let key = handover_key(&a.id);
    let mut h = ctx
        .get_json::<Handover>(&key)?
        .ok_or_else(|| ContractError::not_found(format!("no handover {}", a.id)))?;
    if h.status != HandoverStatus::Offered {
        return Err(invalid(
            "handover_closed",
            format!("handover {} is {:?}", a.id, h.status).to_lowercase(),
        ));
    }
    let side = if answer == Answer::Cancel {
        &h.from_org
    } else {
        &h.to_org
    };
    if &m.org != side {
        return Err(ContractError::not_permitted(format!(
            "only {side} can answer this handover"
        )));
    }
    if answer == Answer::Accept {
        // Custody moves only if the sender still holds every lot.
        for r in &h.lots {
            let mut lot = load_lot(ctx, r)?;
            if lot.custodian != h.from_org {
                return Err(invalid(
                    "custody_changed",
                    format!(
                        "lot {} of GTIN {} is now held by {}",
                        r.lot, r.gtin, lot.custodian
                    ),
                ));
            }
            lot.custodian = h.to_org.clone();
            ctx.set_json(&r.state_key(), &lot)?;
        }
    }
    h.status = match answer {
        Answer::Accept => HandoverStatus::Accepted,
        Answer::Reject => HandoverStatus::Rejected,
        Answer::Cancel => HandoverStatus::Cancelled,
    };
    h.answered_by = Some(m.id());
    h.answered_height = Some(ctx.block.height);
    ctx.set_json(&key, &h)?;
    let kind = match answer {
        Answer::Accept => "handover_accepted",
        Answer::Reject => "handover_rejected",
        Answer::Cancel => "handover_cancelled",
    };
    ctx.emit(
        kind,
        &json!({"id": h.id, "from": h.from_org, "to": h.to_org}),
    )
}

// ------------------------------------------------------------------------------ cold chain

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reading {
    time_ms: u64,
    #[serde(default)]
    temperature_c: Option<f64>,
    #[serde(default)]
    humidity_pct: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SensorArgs {
    gtin: String,
    lot: String,
    device: String,
    readings: Vec<Reading>,
}

fn sensor_report(ctx: &mut CallContext<'_>, a: SensorArgs) -> Result<(), ContractError> {
    let m = system::sender_member(ctx)?;
    let r = lot_ref(&a.gtin, &a.lot)?;
    required("device", &a.device, 200)?;
    if a.readings.is_empty() || a.readings.len() > MAX_READINGS_PER_REPORT {
        return Err(ContractError::invalid_args(format!(
            "a report holds 1 to {MAX_READINGS_PER_REPORT} readings"
        )));
    }
    let mut lot = load_lot(ctx, &r)?;
    let is_operator = m.has_role(ROLE_OPERATOR) || m.has_role(system::ROLE_ORG_ADMIN);
    if !(m.has_role(ROLE_GATEWAY) || is_operator && m.org == lot.custodian) {
        return Err(ContractError::not_permitted(format!(
            "member {} is neither an IoT gateway nor an operator of the custodian {}",
            m.id(),
            lot.custodian
        )));
    }
    let product = ctx
        .get_json::<Product>(&product_key(&r.gtin))?
        .ok_or_else(|| {
            ContractError::new(
                "unknown_product",
                format!("GTIN {} is not registered", r.gtin),
            )
        })?;
    let mut found = Vec::new();
    for rd in &a.readings {
        if rd.time_ms > ctx.block.time_ms + 300_000 {
            return Err(ContractError::invalid_args(format!(
                "reading at {} is in the future of block time {}",
                rd.time_ms, ctx.block.time_ms
            )));
        }
        let checks = [
            ("temperature", rd.temperature_c, product.temperature),
            ("humidity", rd.humidity_pct, product.humidity),
        ];
        for (quantity, value, allowed) in checks {
            let Some(v) = value else { continue };
            let v = hundredths(quantity, v)?;
            if let Some(allowed) = allowed
                && !allowed.contains(v)
            {
                found.push(Excursion {
                    device: a.device.clone(),
                    time_ms: rd.time_ms,
                    quantity: quantity.to_string(),
                    value: v,
                    min: allowed.min,
                    max: allowed.max,
                    height: ctx.block.height,
                });
            }
        }
    }
    ctx.emit(
        "sensor_report",
        &json!({"gtin": r.gtin, "lot": r.lot, "device": a.device, "readings": a.readings.len(), "excursions": found.len()}),
    )?;
    if found.is_empty() {
        return Ok(());
    }
    if lot.status == LotStatus::Ok {
        lot.status = LotStatus::NonConformant;
        lot.disposition = "non_conformant".into();
    }
    lot.excursion_count += found.len() as u64;
    let room = MAX_EVIDENCE.saturating_sub(lot.excursions.len());
    lot.excursions.extend(found.iter().take(room).cloned());
    ctx.set_json(&r.state_key(), &lot)?;
    let evidence: Vec<Value> = found
        .iter()
        .take(MAX_EVIDENCE)
        .map(|e| json!({"time_ms": e.time_ms, "quantity": e.quantity, "value": e.value, "min": e.min, "max": e.max}))
        .collect();
    ctx.emit(
        "excursion",
        &json!({"gtin": r.gtin, "lot": r.lot, "device": a.device, "status": lot.status.as_str(), "readings": evidence}),
    )?;
    ctx.emit(
        "alert",
        &json!({"kind": "excursion", "gtin": r.gtin, "lot": r.lot, "count": found.len()}),
    )
}

// ------------------------------------------------------------------------------ recall

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecallArgs {
    id: String,
    gtin: String,
    lot: String,
    reason: String,
}

/// Every lot linked to `origin` through transformations, forward (made from it) and backward
/// (it was made from), breadth first and bounded. Backward links are not followed forward
/// again: a contaminated ingredient's other products are recalled by recalling the ingredient.
pub fn recall_closure(
    get: &mut dyn FnMut(&LotRef) -> Result<Option<Lot>, ContractError>,
    origin: &LotRef,
    limit: usize,
) -> Result<Vec<LotRef>, ContractError> {
    let mut seen: BTreeSet<LotRef> = BTreeSet::new();
    seen.insert(origin.clone());
    for forward in [true, false] {
        let mut queue = VecDeque::from([origin.clone()]);
        while let Some(r) = queue.pop_front() {
            let Some(lot) = get(&r)? else { continue };
            let next = if forward { &lot.outputs } else { &lot.inputs };
            for n in next {
                if seen.insert(n.clone()) {
                    if seen.len() > limit {
                        return Err(invalid(
                            "recall_too_large",
                            format!("the recall reaches more than {limit} lots"),
                        ));
                    }
                    queue.push_back(n.clone());
                }
            }
        }
    }
    Ok(seen.into_iter().collect())
}

fn recall(ctx: &mut CallContext<'_>, a: RecallArgs) -> Result<(), ContractError> {
    let m = system::sender_member(ctx)?;
    required("id", &a.id, 100)?;
    required("reason", &a.reason, 2000)?;
    let origin = lot_ref(&a.gtin, &a.lot)?;
    let lot = load_lot(ctx, &origin)?;
    let is_operator = m.has_role(ROLE_OPERATOR) || m.has_role(system::ROLE_ORG_ADMIN);
    let product_owner = ctx
        .get_json::<Product>(&product_key(&origin.gtin))?
        .map(|p| p.owner);
    let may = m.has_role(ROLE_REGULATOR)
        || is_operator && (m.org == lot.owner || product_owner.as_deref() == Some(m.org.as_str()));
    if !may {
        return Err(ContractError::not_permitted(format!(
            "only the lot's maker {} or a regulator can recall it",
            lot.owner
        )));
    }
    let key = recall_key(&a.id);
    if ctx.get_json::<Recall>(&key)?.is_some() {
        return Err(invalid("recall_exists", format!("recall {} exists", a.id)));
    }
    let lots = {
        let mut get = |r: &LotRef| ctx.get_json::<Lot>(&r.state_key());
        recall_closure(&mut get, &origin, MAX_RECALL_LOTS)?
    };
    for r in &lots {
        let mut l = get_or_new_lot(ctx, r, &lot.owner)?;
        l.status = LotStatus::Recalled;
        l.disposition = "recalled".into();
        l.recall = Some(a.id.clone());
        ctx.set_json(&r.state_key(), &l)?;
    }
    let rec = Recall {
        id: a.id.clone(),
        origin: origin.clone(),
        reason: a.reason,
        by: m.id(),
        height: ctx.block.height,
        time_ms: ctx.block.time_ms,
        lots,
    };
    ctx.set_json(&key, &rec)?;
    ctx.emit(
        "recall",
        &json!({"id": rec.id, "gtin": origin.gtin, "lot": origin.lot, "lots": rec.lots.len(), "by": rec.by}),
    )?;
    ctx.emit(
        "alert",
        &json!({"kind": "recall", "id": rec.id, "gtin": origin.gtin, "lot": origin.lot, "count": rec.lots.len()}),
    )
}
