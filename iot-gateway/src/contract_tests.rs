//! The `iot` contract's rules through the real execution engine (in-memory ledger).

use chain_core::crypto::{SigAlg, SigningKey, Suite};
use chain_core::genesis::{Genesis, GenesisValidator};
use chain_core::ledger::Ledger;
use chain_core::system::{GenesisMember, GenesisOrg, GovernanceParams, NewAdmin};
use chain_core::types::{Receipt, TxStatus};
use serde_json::{Value, json};

use crate::contract::*;

fn key(label: &str) -> SigningKey {
    SigningKey::from_label(SigAlg::Ed25519, label)
}

fn ledger() -> Ledger {
    let org = |id: &str, members: Vec<GenesisMember>| GenesisOrg {
        id: id.into(),
        name: id.into(),
        admins: vec![NewAdmin {
            name: "admin".into(),
            public_key: key(&format!("{id}-admin")).public_key(),
        }],
        members,
    };
    let genesis = Genesis {
        chain_id: "iot-test".into(),
        suite: Suite::Ed25519Sha256,
        genesis_time_ms: 1_700_000_000_000,
        validators: vec![GenesisValidator {
            name: "v".into(),
            public_key: key("validator").public_key(),
            power: 1,
            address: None,
        }],
        organisations: vec![
            org(
                "swiftcold",
                vec![
                    GenesisMember {
                        name: "gateway".into(),
                        public_key: key("gateway").public_key(),
                        roles: vec![ROLE_GATEWAY.into()],
                    },
                    GenesisMember {
                        name: "driver".into(),
                        public_key: key("driver").public_key(),
                        roles: vec![],
                    },
                ],
            ),
            org("acme", vec![]),
        ],
        governance: GovernanceParams::default(),
    };
    let mut registry = chain_core::core_contracts();
    registry.register(std::sync::Arc::new(IotContract));
    Ledger::new(&genesis, registry).expect("genesis")
}

fn call(l: &mut Ledger, who: &str, method: &str, args: Value) -> Receipt {
    l.call(&key(who), NAME, method, args).expect("block")
}

fn code(r: &Receipt) -> &str {
    if r.status == TxStatus::Ok {
        "ok"
    } else {
        &r.code
    }
}

#[test]
fn devices_are_registered_bound_and_revoked_by_their_organisation_only() {
    let mut l = ledger();
    let sensor = key("truck-7").public_key();
    let register = json!({"public_key": sensor.to_text(), "name": "Truck 7 probe", "kind": "sensor",
                          "binding": {"type": "lot", "gtin": "09521234000020", "lot": "CHZ-1"}});
    assert_eq!(
        code(&call(&mut l, "driver", "register_device", register.clone())),
        "not_permitted"
    );
    assert_eq!(
        code(&call(
            &mut l,
            "swiftcold-admin",
            "register_device",
            register.clone()
        )),
        "ok"
    );
    assert_eq!(
        code(&call(
            &mut l,
            "swiftcold-admin",
            "register_device",
            register
        )),
        "device_exists"
    );
    let d: Device = l
        .get_json(NAME, &device_key(&sensor.did()))
        .expect("device");
    assert_eq!(
        (d.org.as_str(), d.kind, d.status),
        ("swiftcold", DeviceKind::Sensor, DeviceStatus::Active)
    );

    let sm2 = SigningKey::from_label(SigAlg::Sm2, "sm2-probe").public_key();
    let r = call(
        &mut l,
        "swiftcold-admin",
        "register_device",
        json!({"public_key": sm2.to_text(), "name": "x", "kind": "sensor"}),
    );
    assert_eq!(code(&r), "wrong_suite");
    let r = call(
        &mut l,
        "swiftcold-admin",
        "register_device",
        json!({"public_key": "ed25519:00", "name": "x", "kind": "sensor"}),
    );
    assert_eq!(code(&r), "invalid_key");
    let r = call(
        &mut l,
        "swiftcold-admin",
        "register_device",
        json!({"public_key": key("p2").public_key().to_text(), "name": "x", "kind": "sensor",
               "binding": {"type": "location", "gln": "123"}}),
    );
    assert_eq!(code(&r), "invalid_args");

    let did = sensor.did();
    let rebind = json!({"did": did, "binding": {"type": "shipment", "id": "SSCC-1"}});
    assert_eq!(
        code(&call(&mut l, "acme-admin", "bind_device", rebind.clone())),
        "not_permitted"
    );
    assert_eq!(
        code(&call(&mut l, "swiftcold-admin", "bind_device", rebind)),
        "ok"
    );
    let revoke = json!({"did": did, "reason": "lost"});
    assert_eq!(
        code(&call(&mut l, "acme-admin", "revoke_device", revoke.clone())),
        "not_permitted"
    );
    assert_eq!(
        code(&call(
            &mut l,
            "swiftcold-admin",
            "revoke_device",
            revoke.clone()
        )),
        "ok"
    );
    assert_eq!(
        code(&call(&mut l, "swiftcold-admin", "revoke_device", revoke)),
        "device_revoked"
    );
    let d: Device = l.get_json(NAME, &device_key(&did)).expect("device");
    assert_eq!(d.status, DeviceStatus::Revoked);
    assert_eq!(
        d.binding,
        Some(Binding::Shipment {
            id: "SSCC-1".into()
        })
    );
}

#[test]
fn only_gateways_anchor_batches_and_each_batch_once() {
    let mut l = ledger();
    let batch = json!({"id": "gw1-000001", "root": "ab".repeat(32), "count": 500,
                       "first_ms": 1, "last_ms": 2});
    assert_eq!(
        code(&call(&mut l, "driver", "anchor_batch", batch.clone())),
        "not_permitted"
    );
    assert_eq!(
        code(&call(&mut l, "gateway", "anchor_batch", batch.clone())),
        "ok"
    );
    assert_eq!(
        code(&call(&mut l, "gateway", "anchor_batch", batch)),
        "batch_exists"
    );
    let b: BatchAnchor = l.get_json(NAME, &batch_key("gw1-000001")).expect("batch");
    assert_eq!((b.count, b.gateway.as_str()), (500, "swiftcold/gateway"));
    let bad = json!({"id": "x", "root": "zz", "count": 1, "first_ms": 1, "last_ms": 2});
    assert_eq!(
        code(&call(&mut l, "gateway", "anchor_batch", bad)),
        "invalid_args"
    );
}
