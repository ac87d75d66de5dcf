//! Contract rules through the real execution engine and system contract (in-memory ledger).

use chain_core::crypto::{SigningKey, Suite};
use chain_core::genesis::{Genesis, GenesisValidator};
use chain_core::ledger::Ledger;
use chain_core::system::{GenesisMember, GenesisOrg, GovernanceParams, NewAdmin};
use chain_core::types::{Receipt, TxStatus};
use serde_json::{Value, json};

use crate::contract::{NAME, TraceContract};
use crate::domain::*;

const SUITE: Suite = Suite::Ed25519Sha256;
const MILK: &str = "09521234000013";
const CHEESE: &str = "09521234000020";
const PIZZA: &str = "09521234000037";

fn key(label: &str) -> SigningKey {
    SigningKey::from_label(SUITE.sig(), label)
}

fn ledger() -> Ledger {
    let org = |id: &str, members: Vec<GenesisMember>| GenesisOrg {
        id: id.into(),
        name: format!("{id} Ltd"),
        admins: vec![NewAdmin {
            name: "admin".into(),
            public_key: key(&format!("{id}-admin")).public_key(),
        }],
        members,
    };
    let member = |name: &str, roles: &[&str]| GenesisMember {
        name: name.into(),
        public_key: key(name).public_key(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    };
    let genesis = Genesis {
        chain_id: "trace-test".into(),
        suite: SUITE,
        genesis_time_ms: 1_700_000_000_000,
        validators: vec![GenesisValidator {
            name: "v".into(),
            public_key: key("validator").public_key(),
            power: 1,
            address: None,
        }],
        organisations: vec![
            org(
                "acme",
                vec![
                    member("clerk", &[]),
                    member("operator", &["trace.operator"]),
                    member("gateway", &["iot.gateway"]),
                ],
            ),
            org("swiftcold", vec![]),
            org("freshmart", vec![member("shop", &["trace.operator"])]),
            org("samr", vec![member("inspector", &["regulator"])]),
        ],
        governance: GovernanceParams::default(),
    };
    let mut registry = chain_core::core_contracts();
    registry.register(std::sync::Arc::new(TraceContract));
    Ledger::new(&genesis, registry).expect("genesis")
}

fn call(l: &mut Ledger, who: &str, method: &str, args: Value) -> Receipt {
    l.call(&key(who), NAME, method, args).expect("block")
}

fn ok(r: &Receipt) {
    assert_eq!(r.status, TxStatus::Ok, "{}: {}", r.code, r.message);
}

fn fails(r: &Receipt, code: &str) {
    assert_eq!(r.status, TxStatus::Failed, "expected {code}");
    assert_eq!(r.code, code, "{}", r.message);
}

fn lot(l: &Ledger, gtin: &str, lot: &str) -> Lot {
    l.get_json(NAME, &lot_key(gtin, lot)).expect("lot exists")
}

fn setup_milk(l: &mut Ledger) {
    ok(&call(
        l,
        "acme-admin",
        "register_product",
        json!({"gtin": MILK, "name": "Fresh milk 1 L", "temperature_c": [2.0, 8.0], "shelf_life_days": 10}),
    ));
    ok(&call(
        l,
        "acme-admin",
        "create_lot",
        json!({"gtin": MILK, "lot": "M1"}),
    ));
}

#[test]
fn master_data_rejects_bad_identifiers_and_foreign_owners() {
    let mut l = ledger();
    let r = call(
        &mut l,
        "acme-admin",
        "register_product",
        json!({"gtin": "09521234000014", "name": "x"}),
    );
    assert_eq!(r.status, TxStatus::Failed);
    assert!(r.code.starts_with("gs1_"), "{}", r.code);
    assert!(
        r.message.contains('3'),
        "names the expected digit: {}",
        r.message
    );
    assert!(
        l.get_json::<Product>(NAME, &product_key("09521234000014"))
            .is_none()
    );

    fails(
        &call(
            &mut l,
            "clerk",
            "register_product",
            json!({"gtin": MILK, "name": "x"}),
        ),
        "not_permitted",
    );
    setup_milk(&mut l);
    // Another organisation cannot take over the GTIN or make its lots.
    fails(
        &call(
            &mut l,
            "freshmart-admin",
            "register_product",
            json!({"gtin": MILK, "name": "x"}),
        ),
        "not_permitted",
    );
    fails(
        &call(
            &mut l,
            "freshmart-admin",
            "create_lot",
            json!({"gtin": MILK, "lot": "F1"}),
        ),
        "not_permitted",
    );
    fails(
        &call(
            &mut l,
            "acme-admin",
            "create_lot",
            json!({"gtin": MILK, "lot": "M1"}),
        ),
        "lot_exists",
    );
    let m1 = lot(&l, MILK, "M1");
    assert_eq!(m1.custodian, "acme");
    // Shelf life gives the expiry.
    assert_eq!(m1.expiry_ms, m1.produced_ms.map(|p| p + 10 * 86_400_000));
    fails(
        &call(
            &mut l,
            "acme-admin",
            "register_location",
            json!({"gln": "9521234000016", "name": "Farm"}),
        ),
        "gs1_check_digit",
    );
    ok(&call(
        &mut l,
        "acme-admin",
        "register_location",
        json!({"gln": "9521234000013", "name": "Farm", "lat": 31.2, "lon": 121.5}),
    ));
}

#[test]
fn custody_moves_only_when_both_sides_signed() {
    let mut l = ledger();
    setup_milk(&mut l);
    let offer = json!({"id": "H1", "to_org": "freshmart", "lots": [{"gtin": MILK, "lot": "M1"}]});
    // Only the custodian can offer.
    fails(
        &call(&mut l, "shop", "offer_handover", offer.clone()),
        "not_permitted",
    );
    ok(&call(&mut l, "operator", "offer_handover", offer));
    // Offered is not handed over.
    assert_eq!(lot(&l, MILK, "M1").custodian, "acme");
    // A third organisation cannot accept, and the sender cannot accept for the receiver.
    fails(
        &call(
            &mut l,
            "swiftcold-admin",
            "accept_handover",
            json!({"id": "H1"}),
        ),
        "not_permitted",
    );
    fails(
        &call(&mut l, "acme-admin", "accept_handover", json!({"id": "H1"})),
        "not_permitted",
    );
    ok(&call(
        &mut l,
        "shop",
        "accept_handover",
        json!({"id": "H1"}),
    ));
    assert_eq!(lot(&l, MILK, "M1").custodian, "freshmart");
    let h: Handover = l.get_json(NAME, &handover_key("H1")).expect("handover");
    assert_eq!(h.status, HandoverStatus::Accepted);
    assert_eq!(h.offered_by, "acme/operator");
    assert_eq!(h.answered_by.as_deref(), Some("freshmart/shop"));
    fails(
        &call(&mut l, "shop", "accept_handover", json!({"id": "H1"})),
        "handover_closed",
    );
    // The former custodian can no longer offer it.
    fails(
        &call(
            &mut l,
            "acme-admin",
            "offer_handover",
            json!({"id": "H2", "to_org": "swiftcold", "lots": [{"gtin": MILK, "lot": "M1"}]}),
        ),
        "not_permitted",
    );
}

#[test]
fn an_excursion_makes_the_lot_non_conformant_with_evidence_and_an_alert() {
    let mut l = ledger();
    setup_milk(&mut l);
    let now = l.time_ms();
    let report = |t: f64| {
        json!({"gtin": MILK, "lot": "M1", "device": "truck-7",
               "readings": [{"time_ms": now, "temperature_c": 4.0}, {"time_ms": now + 60_000, "temperature_c": t}]})
    };
    // Readings within the range change nothing.
    ok(&call(&mut l, "gateway", "sensor_report", report(7.99)));
    assert_eq!(lot(&l, MILK, "M1").status, LotStatus::Ok);
    // Someone who is neither a gateway nor the custodian cannot report.
    fails(
        &call(&mut l, "shop", "sensor_report", report(20.0)),
        "not_permitted",
    );
    let r = call(&mut l, "gateway", "sensor_report", report(9.5));
    ok(&r);
    let m1 = lot(&l, MILK, "M1");
    assert_eq!(m1.status, LotStatus::NonConformant);
    assert_eq!(m1.excursion_count, 1);
    assert_eq!(m1.excursions[0].value, 950);
    assert_eq!((m1.excursions[0].min, m1.excursions[0].max), (200, 800));
    let kinds: Vec<&str> = r.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["sensor_report", "excursion", "alert"]);
    let bad = call(
        &mut l,
        "gateway",
        "sensor_report",
        json!({"gtin": MILK, "lot": "M1", "device": "d", "readings": [{"time_ms": now, "temperature_c": 1.0e9}]}),
    );
    assert_eq!(bad.status, TxStatus::Failed);
}

fn transformation(inputs: &[(&str, &str)], outputs: &[(&str, &str)], id: &str) -> String {
    let q = |l: &[(&str, &str)]| {
        l.iter()
            .map(|(g, lot)| {
                json!({"epcClass": format!("https://id.gs1.org/01/{g}/10/{lot}"), "quantity": 10, "uom": "KGM"})
            })
            .collect::<Vec<_>>()
    };
    json!({
        "type": "TransformationEvent",
        "eventTime": "2024-03-01T10:00:00.000+08:00",
        "eventTimeZoneOffset": "+08:00",
        "transformationID": format!("urn:uuid:{id}"),
        "inputQuantityList": q(inputs),
        "outputQuantityList": q(outputs),
        "bizStep": "commissioning",
    })
    .to_string()
}

#[test]
fn recall_follows_transformations_forward_and_backward_through_levels() {
    let mut l = ledger();
    for (g, n) in [(MILK, "milk"), (CHEESE, "cheese"), (PIZZA, "pizza")] {
        ok(&call(
            &mut l,
            "acme-admin",
            "register_product",
            json!({"gtin": g, "name": n}),
        ));
    }
    // milk M1, M2 → cheese C1; milk M3 → cheese C2; cheese C1 → pizza P1, P2; C2 → P3.
    let events = vec![
        transformation(
            &[(MILK, "M1"), (MILK, "M2")],
            &[(CHEESE, "C1")],
            "00000000-0000-4000-8000-000000000001",
        ),
        transformation(
            &[(MILK, "M3")],
            &[(CHEESE, "C2")],
            "00000000-0000-4000-8000-000000000002",
        ),
        transformation(
            &[(CHEESE, "C1")],
            &[(PIZZA, "P1"), (PIZZA, "P2")],
            "00000000-0000-4000-8000-000000000003",
        ),
        transformation(
            &[(CHEESE, "C2")],
            &[(PIZZA, "P3")],
            "00000000-0000-4000-8000-000000000004",
        ),
    ];
    let r = call(
        &mut l,
        "acme-admin",
        "capture",
        json!({"capture_id": "cap-1", "events": events}),
    );
    ok(&r);
    assert_eq!(lot(&l, CHEESE, "C1").inputs.len(), 2);
    // Capturing the same events again stores nothing new.
    let again = call(
        &mut l,
        "acme-admin",
        "capture",
        json!({"capture_id": "cap-2", "events": events}),
    );
    ok(&again);
    let data: Value = serde_json::from_slice(&again.events[0].data).expect("json");
    assert_eq!(
        (data["stored"].as_u64(), data["duplicates"].as_u64()),
        (Some(0), Some(4))
    );
    assert_eq!(l.keys_with_prefix(NAME, "event/").len(), 4);

    // A retailer cannot recall the maker's lot; the regulator can.
    fails(
        &call(
            &mut l,
            "shop",
            "recall",
            json!({"id": "R1", "gtin": CHEESE, "lot": "C1", "reason": "listeria"}),
        ),
        "not_permitted",
    );
    let r = call(
        &mut l,
        "inspector",
        "recall",
        json!({"id": "R1", "gtin": CHEESE, "lot": "C1", "reason": "listeria"}),
    );
    ok(&r);
    let recalled = |g: &str, n: &str| lot(&l, g, n).status == LotStatus::Recalled;
    assert!(recalled(CHEESE, "C1"));
    assert!(recalled(PIZZA, "P1") && recalled(PIZZA, "P2"), "forward");
    assert!(recalled(MILK, "M1") && recalled(MILK, "M2"), "backward");
    assert!(!recalled(CHEESE, "C2") && !recalled(PIZZA, "P3") && !recalled(MILK, "M3"));
    let rec: Recall = l.get_json(NAME, &recall_key("R1")).expect("recall");
    assert_eq!(rec.lots.len(), 5);
    // A recalled lot cannot be handed over.
    fails(
        &call(
            &mut l,
            "acme-admin",
            "offer_handover",
            json!({"id": "H9", "to_org": "freshmart", "lots": [{"gtin": PIZZA, "lot": "P1"}]}),
        ),
        "lot_recalled",
    );
}

#[test]
fn a_capture_with_one_bad_event_stores_nothing() {
    let mut l = ledger();
    let good = transformation(
        &[(MILK, "M1")],
        &[(CHEESE, "C1")],
        "00000000-0000-4000-8000-000000000001",
    );
    let r = call(
        &mut l,
        "acme-admin",
        "capture",
        json!({"capture_id": "c", "events": [good, "{not json"]}),
    );
    assert_eq!(r.status, TxStatus::Failed);
    assert!(r.message.starts_with("event 1"), "{}", r.message);
    assert!(l.keys_with_prefix(NAME, "event/").is_empty());
    assert!(l.keys_with_prefix(NAME, "lot/").is_empty());
}

#[test]
fn an_item_is_packed_in_one_unit_at_a_time() {
    let mut l = ledger();
    let agg = |sscc: &str, action: &str| {
        json!({
            "type": "AggregationEvent",
            "eventTime": "2024-03-01T10:00:00.000Z",
            "eventTimeZoneOffset": "+00:00",
            "parentID": format!("urn:epc:id:sscc:0952123.{sscc}"),
            "childEPCs": ["urn:epc:id:sgtin:0952123.400001.S1"],
            "action": action,
            "bizStep": "packing",
        })
        .to_string()
    };
    ok(&call(
        &mut l,
        "acme-admin",
        "capture",
        json!({"capture_id": "a", "events": [agg("0000000001", "ADD")]}),
    ));
    fails(
        &call(
            &mut l,
            "acme-admin",
            "capture",
            json!({"capture_id": "b", "events": [agg("0000000002", "ADD")]}),
        ),
        "aggregation_conflict",
    );
    ok(&call(
        &mut l,
        "acme-admin",
        "capture",
        json!({"capture_id": "c", "events": [agg("0000000001", "DELETE")]}),
    ));
    ok(&call(
        &mut l,
        "acme-admin",
        "capture",
        json!({"capture_id": "d", "events": [agg("0000000002", "ADD")]}),
    ));
}
