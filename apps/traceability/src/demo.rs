//! The demo's dairy supply chain, seeded through the same contract calls the pages and the
//! EPCIS API make: Acme Dairy (farm and plant) turns raw milk into cheese and yoghurt,
//! SwiftCold carries them, FreshMart sells them. One yoghurt lot has a cold-chain excursion
//! and one milk lot is recalled, which takes the cheese made from it along.

use std::sync::Arc;

use chain_core::node::{Node, now_ms};
use frontend::auth::{CallError, Custody};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::contract::NAME;
use crate::domain::product_key;
use crate::gs1::check_digit;
use crate::pages::consumer_link;

pub const MILK: &str = "09521234000013";
pub const CHEESE: &str = "09521234000020";
pub const YOGHURT: &str = "09521234000037";

const EPCIS_CONTEXT: &str = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld";
const DAY: u64 = 24 * 3600 * 1000;
const HOUR: u64 = 3600 * 1000;

/// A GS1 key: `body` followed by its check digit.
fn with_check(body: &str) -> String {
    match check_digit(body) {
        Ok(d) => format!("{body}{d}"),
        Err(_) => body.to_string(),
    }
}

fn class(gtin: &str, lot: &str) -> String {
    format!("https://id.gs1.org/01/{gtin}/10/{lot}")
}

fn item(gtin: &str, serial: &str) -> String {
    format!("https://id.gs1.org/01/{gtin}/21/{serial}")
}

fn place(gln: &str) -> Value {
    json!({"id": format!("https://id.gs1.org/414/{gln}")})
}

fn time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// What the demo printed for people to open.
#[derive(Debug, Clone)]
pub struct DemoLinks {
    pub ok: String,
    pub excursion: String,
    pub recalled: String,
}

struct Seeder<'a> {
    node: &'a Arc<Node>,
    custody: &'a Custody,
}

impl Seeder<'_> {
    async fn call(&self, who: &str, method: &str, args: Value) -> Result<(), String> {
        match self
            .custody
            .call(self.node, &format!("{who}-admin"), NAME, method, &args)
            .await
        {
            Ok(_) => Ok(()),
            Err(CallError::Chain { code, message }) => {
                Err(format!("{who}: {method}: {code}: {message}"))
            }
            Err(CallError::Key(m)) => Err(format!("{who}: key: {m}")),
        }
    }

    async fn capture(&self, who: &str, id: &str, events: Vec<Value>) -> Result<(), String> {
        let events: Vec<String> = events.iter().map(Value::to_string).collect();
        self.call(
            who,
            "capture",
            json!({"capture_id": id, "context": EPCIS_CONTEXT, "events": events}),
        )
        .await
    }
}

/// Seeds the demo data unless it is there already. Returns the consumer links to try.
pub async fn seed(
    node: &Arc<Node>,
    custody: &Custody,
    public_url: &str,
) -> Result<DemoLinks, String> {
    let links = DemoLinks {
        ok: consumer_link(public_url, CHEESE, Some("CHZ-2611A"), Some("1001")),
        excursion: consumer_link(public_url, YOGHURT, Some("YOG-2611B"), None),
        recalled: consumer_link(public_url, CHEESE, Some("CHZ-2612"), Some("2001")),
    };
    let seeded: Option<Value> = node
        .state_json(NAME, &product_key(CHEESE))
        .await
        .map_err(|e| e.to_string())?;
    if seeded.is_some() {
        return Ok(links);
    }
    let s = Seeder { node, custody };
    let farm = with_check("952123400010");
    let plant = with_check("952123400020");
    let hub = with_check("952123400030");
    let store = with_check("952123400040");
    let pallet = with_check("09521234000000001");
    let now = now_ms();
    let t0 = now - 6 * DAY;

    for (who, gln, name, kind, address, lat, lon) in [
        (
            "acme",
            &farm,
            "Acme Dairy Farm",
            "farm",
            "Xilinhot, Inner Mongolia",
            43.93,
            116.08,
        ),
        (
            "acme",
            &plant,
            "Acme Dairy Plant",
            "plant",
            "Hohhot, Inner Mongolia",
            40.84,
            111.75,
        ),
        (
            "swiftcold",
            &hub,
            "SwiftCold Beijing Hub",
            "warehouse",
            "Shunyi, Beijing",
            40.13,
            116.65,
        ),
        (
            "freshmart",
            &store,
            "FreshMart Chaoyang",
            "store",
            "Chaoyang, Beijing",
            39.92,
            116.44,
        ),
    ] {
        s.call(
            who,
            "register_location",
            json!({"gln": gln, "name": name, "kind": kind, "address": address, "country": "CN", "lat": lat, "lon": lon}),
        )
        .await?;
    }
    for (gtin, name, zh, temp, days, desc) in [
        (
            MILK,
            "Raw milk (bulk)",
            "生牛乳（散装）",
            [0.0, 6.0],
            3,
            "Raw cow's milk from the Acme farm.",
        ),
        (
            CHEESE,
            "Grassland cheddar 200 g",
            "草原切达奶酪 200克",
            [2.0, 8.0],
            90,
            "Aged cheddar made from Acme farm milk.",
        ),
        (
            YOGHURT,
            "Plain yoghurt 1 kg",
            "原味酸奶 1公斤",
            [2.0, 6.0],
            21,
            "Set yoghurt, live cultures.",
        ),
    ] {
        s.call(
            "acme",
            "register_product",
            json!({"gtin": gtin, "name": name, "name_zh": zh, "brand": "Acme Dairy", "description": desc,
                   "origin": "CN", "temperature_c": temp, "shelf_life_days": days}),
        )
        .await?;
    }
    for (gtin, lot, produced, expiry, loc, qty) in [
        (MILK, "RAW-2611", t0, t0 + 3 * DAY, &farm, "4000 L"),
        (MILK, "RAW-2612", t0 + DAY, t0 + 4 * DAY, &farm, "3000 L"),
        (
            CHEESE,
            "CHZ-2611A",
            t0 + DAY,
            now + 80 * DAY,
            &plant,
            "500 kg",
        ),
        (
            YOGHURT,
            "YOG-2611B",
            t0 + DAY,
            now + 14 * DAY,
            &plant,
            "800 kg",
        ),
        (
            CHEESE,
            "CHZ-2612",
            t0 + 2 * DAY,
            now + 81 * DAY,
            &plant,
            "300 kg",
        ),
    ] {
        s.call(
            "acme",
            "create_lot",
            json!({"gtin": gtin, "lot": lot, "produced_ms": produced, "expiry_ms": expiry, "location": loc, "quantity": qty}),
        )
        .await?;
    }
    let cheese_items: Vec<String> = (1001..=1006)
        .map(|n| item(CHEESE, &n.to_string()))
        .collect();
    let recalled_items: Vec<String> = (2001..=2003)
        .map(|n| item(CHEESE, &n.to_string()))
        .collect();
    let ev = |ty: &str, at: u64, step: &str, disp: &str, loc: &str| {
        json!({
            "type": ty,
            "eventTime": time(at),
            "eventTimeZoneOffset": "+08:00",
            "bizStep": step,
            "disposition": disp,
            "readPoint": place(loc),
            "bizLocation": place(loc),
        })
    };
    let mut events = Vec::new();
    for (lot, at) in [("RAW-2611", t0), ("RAW-2612", t0 + DAY)] {
        let mut e = ev("ObjectEvent", at, "commissioning", "active", &farm);
        e["action"] = json!("ADD");
        e["epcList"] = json!([]);
        e["quantityList"] = json!([{"epcClass": class(MILK, lot), "quantity": 4000, "uom": "LTR"}]);
        events.push(e);
    }
    for (input, output, items, at, uom) in [
        (
            "RAW-2611",
            (CHEESE, "CHZ-2611A"),
            &cheese_items,
            t0 + DAY,
            "KGM",
        ),
        (
            "RAW-2611",
            (YOGHURT, "YOG-2611B"),
            &Vec::new(),
            t0 + DAY + 2 * HOUR,
            "KGM",
        ),
        (
            "RAW-2612",
            (CHEESE, "CHZ-2612"),
            &recalled_items,
            t0 + 2 * DAY,
            "KGM",
        ),
    ] {
        let mut e = ev("TransformationEvent", at, "commissioning", "active", &plant);
        e["inputQuantityList"] =
            json!([{"epcClass": class(MILK, input), "quantity": 1500, "uom": "LTR"}]);
        e["outputQuantityList"] =
            json!([{"epcClass": class(output.0, output.1), "quantity": 300, "uom": uom}]);
        events.push(e);
        if !items.is_empty() {
            let mut c = ev("ObjectEvent", at + HOUR, "commissioning", "active", &plant);
            c["action"] = json!("ADD");
            c["epcList"] = json!(items);
            c["ilmd"] = json!({"cbvmda:lotNumber": output.1});
            events.push(c);
        }
    }
    let mut pack = ev(
        "AggregationEvent",
        t0 + 2 * DAY,
        "packing",
        "in_progress",
        &plant,
    );
    pack["action"] = json!("ADD");
    pack["parentID"] = json!(format!("https://id.gs1.org/00/{pallet}"));
    pack["childEPCs"] = json!(cheese_items);
    pack["childQuantityList"] =
        json!([{"epcClass": class(YOGHURT, "YOG-2611B"), "quantity": 200, "uom": "KGM"}]);
    events.push(pack);
    let mut ship = ev(
        "ObjectEvent",
        t0 + 2 * DAY + 4 * HOUR,
        "shipping",
        "in_transit",
        &plant,
    );
    ship["action"] = json!("OBSERVE");
    ship["epcList"] = json!([format!("https://id.gs1.org/00/{pallet}")]);
    events.push(ship);
    s.capture("acme", "demo-acme-1", events).await?;

    s.call(
        "acme",
        "offer_handover",
        json!({"id": "H-2611-1", "to_org": "swiftcold", "lots": [{"gtin": CHEESE, "lot": "CHZ-2611A"}, {"gtin": YOGHURT, "lot": "YOG-2611B"}]}),
    )
    .await?;
    s.call("swiftcold", "accept_handover", json!({"id": "H-2611-1"}))
        .await?;

    let mut recv = ev(
        "ObjectEvent",
        t0 + 3 * DAY,
        "receiving",
        "in_progress",
        &hub,
    );
    recv["action"] = json!("OBSERVE");
    recv["epcList"] = json!([format!("https://id.gs1.org/00/{pallet}")]);
    let mut ship2 = ev("ObjectEvent", t0 + 4 * DAY, "shipping", "in_transit", &hub);
    ship2["action"] = json!("OBSERVE");
    ship2["epcList"] = json!([format!("https://id.gs1.org/00/{pallet}")]);
    s.capture("swiftcold", "demo-swiftcold-1", vec![recv, ship2])
        .await?;

    // Cold chain on the truck: the cheese stays in range, the yoghurt warms up once.
    let readings = |lot_base: f64, spike: Option<f64>| -> Vec<Value> {
        (0..48)
            .map(|i| {
                let wobble = ((i * 7 % 11) as f64 - 5.0) / 10.0;
                let v = match spike {
                    Some(s) if (30..34).contains(&i) => s,
                    _ => lot_base + wobble,
                };
                json!({"time_ms": t0 + 2 * DAY + 6 * HOUR + i as u64 * HOUR, "temperature_c": v, "humidity_pct": 82.0})
            })
            .collect()
    };
    s.call(
        "swiftcold",
        "sensor_report",
        json!({"gtin": CHEESE, "lot": "CHZ-2611A", "device": "did:trellis:swiftcold:truck-7", "readings": readings(4.5, None)}),
    )
    .await?;
    s.call(
        "swiftcold",
        "sensor_report",
        json!({"gtin": YOGHURT, "lot": "YOG-2611B", "device": "did:trellis:swiftcold:truck-7", "readings": readings(4.0, Some(9.4))}),
    )
    .await?;

    s.call(
        "swiftcold",
        "offer_handover",
        json!({"id": "H-2611-2", "to_org": "freshmart", "lots": [{"gtin": CHEESE, "lot": "CHZ-2611A"}]}),
    )
    .await?;
    s.call("freshmart", "accept_handover", json!({"id": "H-2611-2"}))
        .await?;
    let mut arrive = ev(
        "ObjectEvent",
        t0 + 5 * DAY,
        "receiving",
        "in_progress",
        &store,
    );
    arrive["action"] = json!("OBSERVE");
    arrive["epcList"] = json!([format!("https://id.gs1.org/00/{pallet}")]);
    let mut unpack = ev(
        "AggregationEvent",
        t0 + 5 * DAY + HOUR,
        "unpacking",
        "in_progress",
        &store,
    );
    unpack["action"] = json!("DELETE");
    unpack["parentID"] = json!(format!("https://id.gs1.org/00/{pallet}"));
    unpack["childEPCs"] = json!(cheese_items);
    let mut shelf = ev(
        "ObjectEvent",
        t0 + 5 * DAY + 2 * HOUR,
        "stocking",
        "sellable_accessible",
        &store,
    );
    shelf["action"] = json!("OBSERVE");
    shelf["epcList"] = json!(cheese_items);
    let mut sold = ev(
        "ObjectEvent",
        t0 + 5 * DAY + 9 * HOUR,
        "retail_selling",
        "retail_sold",
        &store,
    );
    sold["action"] = json!("OBSERVE");
    sold["epcList"] = json!([item(CHEESE, "1001")]);
    s.capture(
        "freshmart",
        "demo-freshmart-1",
        vec![arrive, unpack, shelf, sold],
    )
    .await?;

    let digest = |text: &str| hex::encode(Sha256::digest(text.as_bytes()));
    s.call(
        "acme",
        "anchor_certificate",
        json!({"id": "CERT-ORG-2026-0117", "kind": "Organic product certificate", "subject": CHEESE,
               "issuer": "China Quality Certification Centre", "hash": digest("organic certificate CERT-ORG-2026-0117"),
               "valid_until_ms": now + 300 * DAY}),
    )
    .await?;
    s.call(
        "acme",
        "anchor_certificate",
        json!({"id": "LAB-CHZ-2611A", "kind": "Laboratory test report", "subject": format!("{CHEESE}/CHZ-2611A"),
               "issuer": "Hohhot Food Inspection Institute", "hash": digest("lab report CHZ-2611A: listeria not detected")}),
    )
    .await?;
    s.call(
        "acme",
        "recall",
        json!({"id": "RECALL-RAW-2612", "gtin": MILK, "lot": "RAW-2612",
               "reason": "Antibiotic residue above the limit in raw milk lot RAW-2612"}),
    )
    .await?;
    Ok(links)
}
