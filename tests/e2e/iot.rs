//! The IoT gateway's pipeline on a real node and database: device registry on chain, signed
//! readings verified (each rejection reason), stored, batched, anchored with the gateway's key,
//! lot-bound readings judged by the cold-chain rule, a reading proven from its envelope to a
//! block signed by the validators (and a tampered one refused), and a restart that neither
//! loses nor repeats anything.

use std::sync::Arc;
use std::time::Duration;

use chain_core::crypto::{HashAlg, SigAlg, SigningKey, Suite};
use chain_core::node::now_ms;
use chain_core::proof::verify_bundle;
use iot_gateway::gateway::{Gateway, GatewayConfig, NodeChain};
use iot_gateway::payload::{Reject, sign_envelope};
use iot_gateway::verify::Incoming;
use sea_orm::Database;
use serde_json::{Value, json};

use crate::common::{Options, TestNode};

const CHEESE: &str = "09521234000020";

fn reading(key: &SigningKey, org: &str, seq: u64, celsius: f64) -> Incoming {
    let did = key.public_key().did();
    let time = chrono::DateTime::from_timestamp_millis(now_ms() as i64)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    let payload = json!({"device": did, "seq": seq, "time": time, "type": "gs1:Temperature",
                         "uom": "CEL", "value": celsius});
    Incoming {
        topic: format!("trellis/{org}/devices/{did}/readings"),
        payload: sign_envelope(key, &payload),
        received_ms: now_ms() as i64,
        redelivered: false,
    }
}

/// The transaction id a proof bundle is about.
fn bundle_tx_id(b: &chain_core::proof::ProofBundle) -> String {
    match &b.claim {
        chain_core::proof::Claim::TxInclusion { tx, .. } => {
            let bytes = hex::decode(tx).expect("tx hex");
            chain_core::types::SignedTx::decode(&bytes, HashAlg::Sha256)
                .expect("tx")
                .id()
                .to_hex()
        }
        other => panic!("not a transaction proof: {other:?}"),
    }
}

/// A node with the traceability and IoT contracts, a gateway member (`swiftcold/gateway`, key
/// `swiftcold-gateway`), a cheese lot kept at 2–8 °C, an active probe bound to it and a revoked
/// one. Returns the node and the two device keys.
async fn setup() -> (TestNode, SigningKey, SigningKey) {
    let mut registry = chain_core::core_contracts();
    registry.register(Arc::new(traceability::contract::TraceContract));
    registry.register(Arc::new(iot_gateway::contract::IotContract));
    let node = TestNode::start_with(Options {
        registry: Some(registry),
        ..Options::default()
    })
    .await;
    let admin = node.key("swiftcold-admin");
    let gateway_key = node.key("swiftcold-gateway");
    node.call_ok(
        &admin,
        "system",
        "register_member",
        json!({"name": "gateway", "public_key": gateway_key.public_key(), "roles": ["iot.gateway"]}),
    )
    .await;
    // The lot the probe watches: cheese, 2–8 °C.
    let acme = node.key("acme-admin");
    node.call_ok(
        &acme,
        "trace",
        "register_product",
        json!({"gtin": CHEESE, "name": "Cheddar", "temperature_c": [2.0, 8.0]}),
    )
    .await;
    node.call_ok(
        &acme,
        "trace",
        "create_lot",
        json!({"gtin": CHEESE, "lot": "L1"}),
    )
    .await;
    let probe = node.key("truck-7-probe");
    let revoked = node.key("old-probe");
    for (k, name) in [(&probe, "Truck 7"), (&revoked, "Old probe")] {
        node.call_ok(
            &admin,
            "iot",
            "register_device",
            json!({
            "public_key": k.public_key().to_text(), "name": name, "kind": "sensor",
            "binding": {"type": "lot", "gtin": CHEESE, "lot": "L1"}}),
        )
        .await;
    }
    node.call_ok(
        &admin,
        "iot",
        "revoke_device",
        json!({"did": revoked.public_key().did(), "reason": "lost"}),
    )
    .await;

    (node, probe, revoked)
}

/// The gateway on its own SQLite store in the node's directory (reopened after a "restart").
async fn open_gateway(node: &TestNode, batch_wait: Duration) -> Gateway {
    let db_path = node.dir.path().join("gateway.db");
    let db_url = format!("sqlite://{}?mode=rwc", db_path.display());
    let db = Database::connect(&db_url).await.expect("gateway db");
    Gateway::open(
        db,
        Arc::new(NodeChain::new(
            node.node.clone(),
            node.key("swiftcold-gateway"),
        )),
        SigAlg::Ed25519,
        HashAlg::Sha256,
        GatewayConfig {
            id: "gw1".into(),
            batch_max: 100,
            batch_wait,
            max_skew: Duration::from_secs(300),
        },
    )
    .await
    .expect("gateway")
}

/// The gateway's inbox beside its store.
async fn open_inbox(node: &TestNode) -> Arc<iot_gateway::inbox::Inbox> {
    Arc::new(
        iot_gateway::inbox::Inbox::open(&node.dir.path().join("gateway.inbox.db"))
            .await
            .expect("gateway inbox"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_are_verified_stored_anchored_reported_and_proven() {
    let (node, probe, revoked) = setup().await;
    let gw = open_gateway(&node, Duration::from_millis(0)).await;

    // Ten good readings (one of them too warm) and one of each kind of bad message.
    let mut msgs: Vec<Incoming> = (1..=10)
        .map(|i| reading(&probe, "swiftcold", i, if i == 7 { 11.5 } else { 4.0 }))
        .collect();
    msgs.push(reading(&probe, "swiftcold", 3, 4.0)); // replay
    msgs.push(reading(&revoked, "swiftcold", 1, 4.0)); // revoked
    msgs.push(reading(&node.key("stranger"), "swiftcold", 1, 4.0)); // unknown
    let mut forged = reading(&probe, "swiftcold", 11, 4.0);
    forged.payload = reading(&node.key("stranger"), "swiftcold", 11, 4.0).payload;
    msgs.push(forged); // signed by someone else: its payload names another device
    let mut tampered = reading(&probe, "swiftcold", 12, 4.0);
    let text = String::from_utf8(tampered.payload.clone()).expect("utf8");
    tampered.payload = text
        .replace("4.0", "3.0")
        .replace(":4,", ":3,")
        .into_bytes();
    msgs.push(tampered); // bad signature
    let results = gw.ingest(&msgs).await.expect("ingest");
    let good = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(good, 10, "{results:?}");
    let rejected = gw.rejected();
    let count = |r: Reject| {
        rejected
            .iter()
            .filter(|((_, x), _)| *x == r)
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    assert_eq!(count(Reject::Replay), 1);
    assert_eq!(count(Reject::RevokedDevice), 1);
    assert_eq!(count(Reject::UnknownDevice), 1);
    assert_eq!(
        count(Reject::WrongTopic) + count(Reject::BadSignature),
        2,
        "{rejected:?}"
    );
    // A stored message again, byte for byte: sent again by anyone, a replay; resent by the
    // broker (MQTT DUP: its acknowledgement was lost), taken as delivered, stored once.
    let mut copy = msgs[4].clone();
    let again = gw
        .ingest(std::slice::from_ref(&copy))
        .await
        .expect("ingest");
    assert_eq!(again, vec![Err(Reject::Replay)]);
    copy.redelivered = true;
    let resent = gw
        .ingest(std::slice::from_ref(&copy))
        .await
        .expect("ingest");
    assert_eq!(resent, vec![Ok(())]);
    let replays: u64 = gw
        .rejected()
        .iter()
        .filter(|((_, x), _)| *x == Reject::Replay)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(replays, 2, "the resend is not counted");
    let seen = gw.activity();
    let probe_seen = &seen[&probe.public_key().did()];
    assert_eq!(probe_seen.accepted, 10);
    assert_eq!(probe_seen.rejected.get("replay"), Some(&2));
    let metrics = gw.metrics().render();
    assert!(
        metrics.contains("trellis_iot_messages_rejected_total{reason=\"replay\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("trellis_iot_messages_accepted_total{channel=\"readings\"} 10"),
        "{metrics}"
    );

    // Closed and anchored: the chain holds the batch root, signed by the gateway.
    let batch = gw.close_batch(true).await.expect("close").expect("a batch");
    assert_eq!(gw.anchor_pending().await.expect("anchor"), 1);
    let anchor = node.state("iot", &format!("batch/{batch}")).await;
    assert_eq!(anchor["value"]["count"], 10, "{anchor}");
    assert_eq!(anchor["value"]["gateway"], "swiftcold/gateway");
    let root = anchor["value"]["root"].as_str().expect("root").to_string();
    // The warm reading reached the lot's cold-chain rule.
    let lot = node.state("trace", &format!("lot/{CHEESE}/L1")).await;
    assert_eq!(lot["value"]["status"], "non_conformant", "{lot}");

    // A reading's proof: envelope → batch root (anchored) → anchoring tx → signed block.
    let key7 = format!("{}#7", probe.public_key().did());
    let proof = gw.proof(&key7).await.expect("db").expect("proof");
    assert!(proof.verify(HashAlg::Sha256, &root));
    let status = gw.batch_status(&batch).await.expect("db").expect("batch");
    let tx_id = status.tx_id.expect("anchoring tx");
    let (s, bundle) = node.get(&format!("/api/v1/txs/{tx_id}/proof")).await;
    assert_eq!(s, 200, "{bundle}");
    let bundle: chain_core::proof::ProofBundle = serde_json::from_value(bundle).expect("bundle");
    let trusted = node.genesis.validator_set().expect("validator set");
    verify_bundle(&bundle, &trusted).expect("the anchoring tx is in a signed block");
    assert_eq!(
        bundle_tx_id(&bundle),
        tx_id,
        "the bundle proves the anchoring transaction"
    );
    let mut forged_proof = proof.clone();
    forged_proof.envelope = forged_proof.envelope.replace("11.5", "5.5");
    assert!(
        !forged_proof.verify(HashAlg::Sha256, &root),
        "a tampered reading does not prove"
    );

    // A handheld scan becomes an EPCIS ObjectEvent (OBSERVE at the scanner's read point),
    // captured on chain by the gateway.
    let scanner = node.key("dock-scanner");
    node.call_ok(
        &node.key("swiftcold-admin"),
        "iot",
        "register_device",
        json!({
        "public_key": scanner.public_key().to_text(), "name": "Dock scanner", "kind": "scanner",
        "binding": {"type": "location", "gln": "9521234000303"}}),
    )
    .await;
    // Not reloaded by hand: the gateway looks up a device it does not know before refusing
    // it, so a device registered a moment ago is accepted at once.
    let sdid = scanner.public_key().did();
    let time = chrono::DateTime::from_timestamp_millis(now_ms() as i64)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    let scan = Incoming {
        topic: format!("trellis/swiftcold/devices/{sdid}/scans"),
        payload: sign_envelope(
            &scanner,
            &json!({"device": sdid, "seq": 1, "time": time,
            "uri": format!("https://id.example.com/01/{CHEESE}/21/77")}),
        ),
        received_ms: now_ms() as i64,
        redelivered: false,
    };
    assert!(gw.ingest(&[scan]).await.expect("ingest")[0].is_ok());
    let scan_batch = gw.close_batch(true).await.expect("close").expect("batch");
    assert_eq!(gw.anchor_pending().await.expect("anchor"), 1);
    let (_, events) = node
        .get("/api/v1/events?contract=trace&kind=captured")
        .await;
    let captured = events.to_string();
    assert!(
        captured.contains(&format!("{scan_batch}-scans")),
        "the scan was captured as an EPCIS event: {events}"
    );

    // Restart: the counters come back from the store (an old message is still a replay), a
    // new reading is accepted, and the batch anchored before is not anchored again.
    drop(gw);
    let gw = open_gateway(&node, Duration::from_millis(0)).await;
    let again = gw
        .ingest(&[
            reading(&probe, "swiftcold", 10, 4.0),
            reading(&probe, "swiftcold", 13, 4.0),
        ])
        .await
        .expect("ingest");
    assert_eq!(again[0], Err(Reject::Replay));
    assert!(again[1].is_ok());
    let second = gw.close_batch(true).await.expect("close").expect("batch");
    assert_ne!(second, batch);
    assert_eq!(gw.anchor_pending().await.expect("anchor"), 1);
    assert_eq!(
        gw.anchor_pending().await.expect("anchor"),
        0,
        "nothing left pending"
    );
    let v: Value = node.state("iot", &format!("batch/{second}")).await;
    assert_eq!(v["value"]["count"], 1);
    let _ = Suite::Ed25519Sha256;
    node.shutdown().await;
}

/// Publishes signed readings over MQTT (QoS 1) to `host:port` and waits until the gateway has
/// stored and anchored them all; returns the gateway.
async fn mqtt_round_trip(
    node: &TestNode,
    probe: &SigningKey,
    host: &str,
    port: u16,
    first_seq: u64,
) {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let gw = Arc::new(open_gateway(node, Duration::from_millis(50)).await);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let sub = tokio::spawn(iot_gateway::mqtt::run_subscriber(
        gw.clone(),
        open_inbox(node).await,
        host.to_string(),
        port,
        format!("trellis-gw-test-{}", crate::common::rand_suffix()),
        stop.clone(),
    ));
    let anchoring = tokio::spawn(iot_gateway::mqtt::run_anchoring(
        gw.clone(),
        Duration::from_millis(100),
        stop,
    ));
    // Give the subscription a moment to be in place before devices publish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut opts = MqttOptions::new(
        format!("probe-{}", crate::common::rand_suffix()),
        host,
        port,
    );
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut events) = AsyncClient::new(opts, 100);
    let pump = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let n = 40u64;
    for i in 0..n {
        let m = reading(probe, "swiftcold", first_seq + i, 4.0);
        client
            .publish(m.topic, QoS::AtLeastOnce, false, m.payload)
            .await
            .expect("publish");
    }
    // A garbled message on the same topic is refused, and the gateway carries on.
    let did = probe.public_key().did();
    client
        .publish(
            format!("trellis/swiftcold/devices/{did}/readings"),
            QoS::AtLeastOnce,
            false,
            b"{garbage".to_vec(),
        )
        .await
        .expect("publish");
    let last = format!("{did}#{}", first_seq + n - 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let root = loop {
        if let Some(p) = gw.proof(&last).await.expect("db") {
            let anchored = node.state("iot", &format!("batch/{}", p.batch)).await;
            if let Some(root) = anchored["value"]["root"].as_str() {
                assert!(
                    p.verify(HashAlg::Sha256, root),
                    "the last reading proves against the chain"
                );
                break root.to_string();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readings did not get anchored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!root.is_empty());
    assert!(
        gw.rejected()
            .iter()
            .any(|((_, r), _)| *r == Reject::Malformed),
        "the garbled message was refused: {:?}",
        gw.rejected()
    );
    let _ = stop_tx.send(true);
    let _ = sub.await;
    let _ = anchoring.await;
    pump.abort();
}

/// Readings published over MQTT reach the chain: through the embedded broker (always, on a free
/// port), and through the Mosquitto that answers on 127.0.0.1:1883 when there is one — including
/// a message published with the `mosquitto_pub` command-line client from a payload signed as
/// docs/spec/iot.md says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_readings_reach_the_chain_through_the_embedded_broker_and_mosquitto() {
    let (node, probe, _revoked) = setup().await;
    let port = crate::common::free_port();
    iot_gateway::mqtt::start_embedded_broker(format!("127.0.0.1:{port}").parse().expect("addr"))
        .await
        .expect("embedded broker");
    mqtt_round_trip(&node, &probe, "127.0.0.1", port, 1).await;

    if std::net::TcpStream::connect("127.0.0.1:1883").is_err() {
        eprintln!("no Mosquitto on 127.0.0.1:1883: the embedded broker was tested");
        return;
    }
    mqtt_round_trip(&node, &probe, "127.0.0.1", 1883, 1_000).await;
    // mosquitto_pub: a device maker's tool, with a message signed from the spec.
    let Some(pubber) = ["/usr/bin/mosquitto_pub", "/usr/local/bin/mosquitto_pub"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("mosquitto_pub is not installed");
        return;
    };
    let gw = Arc::new(open_gateway(&node, Duration::from_millis(50)).await);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let sub = tokio::spawn(iot_gateway::mqtt::run_subscriber(
        gw.clone(),
        open_inbox(&node).await,
        "127.0.0.1".into(),
        1883,
        format!("trellis-gw-cli-{}", crate::common::rand_suffix()),
        stop.clone(),
    ));
    let anchoring = tokio::spawn(iot_gateway::mqtt::run_anchoring(
        gw.clone(),
        Duration::from_millis(100),
        stop,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = reading(&probe, "swiftcold", 5_000, 5.5);
    let status = std::process::Command::new(pubber)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "1883",
            "-q",
            "1",
            "-t",
            &m.topic,
            "-m",
        ])
        .arg(String::from_utf8(m.payload).expect("utf8"))
        .status()
        .expect("run mosquitto_pub");
    assert!(status.success());
    let key = format!("{}#5000", probe.public_key().did());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while gw.proof(&key).await.expect("db").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the mosquitto_pub reading was not batched"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(true);
    let _ = sub.await;
    let _ = anchoring.await;
    node.shutdown().await;
}

/// A node behind a switch: requests pass while `up`, get 503 otherwise (the node is away).
async fn switchable_proxy(target: String) -> (String, Arc<std::sync::atomic::AtomicBool>) {
    use axum::body::Bytes;
    use axum::http::{Method, StatusCode, Uri};
    use std::sync::atomic::{AtomicBool, Ordering};
    let up = Arc::new(AtomicBool::new(true));
    let flag = up.clone();
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
        let (flag, http, target) = (flag.clone(), http.clone(), target.clone());
        async move {
            if !flag.load(Ordering::SeqCst) {
                return (StatusCode::SERVICE_UNAVAILABLE, Vec::new());
            }
            let url = format!(
                "{target}{}",
                uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
            );
            let r = http
                .request(method, url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match r {
                Ok(r) => (
                    StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
                    r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                ),
                Err(_) => (StatusCode::BAD_GATEWAY, Vec::new()),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), up)
}

/// The standalone gateway reaches the node over HTTP. While the node is away, accepted
/// readings wait in the outbox; when it is back they are anchored, in order, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_keeps_readings_while_the_node_is_away() {
    use iot_gateway::gateway::HttpChain;
    use std::sync::atomic::Ordering;
    let (node, probe, _revoked) = setup().await;
    let (via, up) = switchable_proxy(node.url.clone()).await;
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        node.dir.path().join("outbox.db").display()
    );
    let open = || async {
        Gateway::open(
            Database::connect(&db_url).await.expect("db"),
            Arc::new(HttpChain::new(&via, node.key("swiftcold-gateway"))),
            SigAlg::Ed25519,
            HashAlg::Sha256,
            GatewayConfig {
                id: "gw2".into(),
                batch_max: 10,
                batch_wait: Duration::from_millis(0),
                max_skew: Duration::from_secs(300),
            },
        )
        .await
        .expect("gateway")
    };
    let gw = open().await;
    up.store(false, Ordering::SeqCst);
    let msgs: Vec<Incoming> = (1..=25)
        .map(|i| reading(&probe, "swiftcold", i, 4.0))
        .collect();
    assert!(
        gw.ingest(&msgs)
            .await
            .expect("ingest")
            .iter()
            .all(Result::is_ok)
    );
    let mut batches = Vec::new();
    while let Some(b) = gw.close_batch(true).await.expect("close") {
        batches.push(b);
    }
    assert_eq!(batches.len(), 3);
    assert!(gw.anchor_pending().await.is_err(), "the node is away");
    for b in &batches {
        let s = gw.batch_status(b).await.expect("db").expect("batch");
        assert_eq!(s.status, "pending");
    }
    // The gateway restarts while the node is still away; then the node comes back.
    drop(gw);
    let gw = open().await;
    up.store(true, Ordering::SeqCst);
    assert_eq!(gw.anchor_pending().await.expect("anchor"), 3);
    assert_eq!(gw.anchor_pending().await.expect("anchor"), 0);
    let mut total = 0;
    let mut heights = Vec::new();
    for b in &batches {
        let v = node.state("iot", &format!("batch/{b}")).await;
        total += v["value"]["count"].as_u64().expect("anchored");
        heights.push(v["value"]["height"].as_u64().expect("height"));
    }
    assert_eq!(total, 25, "every accepted reading anchored once");
    let mut sorted = heights.clone();
    sorted.sort();
    assert_eq!(heights, sorted, "in order");
    node.shutdown().await;
}

/// The simulator registers its devices through the node's API and publishes signed readings,
/// a share of them bad; the gateway anchors every good one and refuses every bad one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_drives_the_gateway_with_good_and_bad_readings() {
    use iot_gateway::sim::{SimConfig, publish, register};
    let (node, _probe, _revoked) = setup().await;
    let port = crate::common::free_port();
    iot_gateway::mqtt::start_embedded_broker(format!("127.0.0.1:{port}").parse().expect("addr"))
        .await
        .expect("broker");
    let sim = SimConfig {
        org: "swiftcold".into(),
        devices: 4,
        rate: 200,
        duration: Duration::from_secs(2),
        bad_ratio: 0.2,
        binding: None,
        mqtt_host: "127.0.0.1".into(),
        mqtt_port: port,
        alg: SigAlg::Ed25519,
    };
    let admin = iot_gateway::gateway::HttpChain::new(&node.url, node.key("swiftcold-admin"));
    assert_eq!(register(&admin, &sim).await.expect("register"), 4);
    assert_eq!(
        register(&admin, &sim).await.expect("again"),
        0,
        "a second run reuses them"
    );
    let gw = Arc::new(open_gateway(&node, Duration::from_millis(50)).await);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let sub = tokio::spawn(iot_gateway::mqtt::run_subscriber(
        gw.clone(),
        open_inbox(&node).await,
        "127.0.0.1".into(),
        port,
        "gw-sim-test".into(),
        stop.clone(),
    ));
    let anchoring = tokio::spawn(iot_gateway::mqtt::run_anchoring(
        gw.clone(),
        Duration::from_millis(100),
        stop,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = publish(&sim).await.expect("publish");
    assert!(report.published >= 300 && report.bad > 0, "{report:?}");
    let good = report.published - report.bad;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = node
            .get("/api/v1/state/iot?prefix=batch%2F&limit=1000")
            .await;
        let anchored: u64 = list["entries"]
            .as_array()
            .map(|e| e.iter().filter_map(|x| x["value"]["count"].as_u64()).sum())
            .unwrap_or(0);
        let refused: u64 = gw.rejected().values().sum();
        if anchored == good && refused == report.bad {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "anchored {anchored} of {good} good, refused {refused} of {} bad",
            report.bad
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop_tx.send(true);
    let _ = sub.await;
    let _ = anchoring.await;
    node.shutdown().await;
}

/// `trellis gateway` as its own process against the node's API, fed through a broker that
/// outlives it; returns the child.
fn spawn_gateway_process(
    dir: &std::path::Path,
    node_url: &str,
    mqtt_port: u16,
) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("gateway.log"))
        .expect("log");
    std::process::Command::new(crate::web::BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(["gateway", "--node", node_url, "--listen", "127.0.0.1:0"])
        .env("TRELLIS_PASSPHRASE", crate::web::PASS)
        .env("TRELLIS_MQTT_BROKER", format!("127.0.0.1:{mqtt_port}"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn trellis gateway")
}

/// The gateway process is killed (SIGKILL) twice while a sensor publishes, and restarted: the
/// broker redelivers what was not acknowledged, the store keeps one copy, and every reading the
/// sensor published ends up anchored on chain exactly once, in batches whose members are each
/// provable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_stream_anchors_every_reading_exactly_once() {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let (node, _probe, _revoked) = setup().await;
    // An unbound sensor: anchoring only.
    let admin = node.key("swiftcold-admin");
    let sensor = node.key("kill-test-sensor");
    node.call_ok(
        &admin,
        "iot",
        "register_device",
        json!({"public_key": sensor.public_key().to_text(), "name": "Kill test", "kind": "sensor"}),
    )
    .await;
    let gw_dir = tempfile::tempdir().expect("tempdir");
    chain_core::keystore::Keystore::open(gw_dir.path().join("keystore"))
        .expect("keystore")
        .with_kdf(chain_core::keystore::KdfParams::insecure_fast())
        .save(
            "swiftcold-gateway",
            &node.key("swiftcold-gateway"),
            crate::web::PASS,
        )
        .expect("save gateway key");
    let port = crate::common::free_port();
    iot_gateway::mqtt::start_embedded_broker(format!("127.0.0.1:{port}").parse().expect("addr"))
        .await
        .expect("broker");
    let mut gateway = spawn_gateway_process(gw_dir.path(), &node.url, port);
    // Let it connect and subscribe (its persistent session then keeps what arrives).
    let store_path = gw_dir.path().join("gateway.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !store_path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut opts = MqttOptions::new("kill-test-sensor", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 1_000);
    let pump = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let did = sensor.public_key().did();
    let topic = format!("trellis/swiftcold/devices/{did}/readings");
    const TOTAL: u64 = 1_500;
    let mut killed_with = Vec::new();
    for seq in 1..=TOTAL {
        let time = chrono::DateTime::from_timestamp_millis(now_ms() as i64)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        let payload = json!({"device": did, "seq": seq, "time": time, "type": "gs1:Temperature",
                             "uom": "CEL", "value": 4.0 + (seq % 10) as f64 / 10.0});
        client
            .publish(
                topic.clone(),
                QoS::AtLeastOnce,
                false,
                sign_envelope(&sensor, &payload),
            )
            .await
            .expect("publish");
        if seq % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Mid-stream, twice: kill -9, publish on while it is down, restart.
        if seq == 500 || seq == 1_000 {
            gateway.kill().expect("kill -9");
            let _ = gateway.wait();
            killed_with.push(stored_readings(&store_path).await);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if seq == 700 || seq == 1_200 {
            gateway = spawn_gateway_process(gw_dir.path(), &node.url, port);
        }
    }

    // Everything published is anchored, once.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let (anchored, batches) = loop {
        let (_, list) = node
            .get("/api/v1/state/iot?prefix=batch%2F&limit=1000")
            .await;
        let entries = list["entries"].as_array().cloned().unwrap_or_default();
        let ours: Vec<Value> = entries
            .into_iter()
            .filter(|e| {
                e["key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("batch/gw-swiftcold-gateway-"))
            })
            .collect();
        let anchored: u64 = ours
            .iter()
            .filter_map(|e| e["value"]["count"].as_u64())
            .sum();
        if anchored >= TOTAL {
            break (anchored, ours);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "anchored {anchored} of {TOTAL}; gateway log:\n{}",
            std::fs::read_to_string(gw_dir.path().join("gateway.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(anchored, TOTAL, "no reading anchored twice");
    // The gateway's store agrees: one row per counter, every one in an anchored batch.
    let _ = gateway.kill();
    let _ = gateway.wait();
    client.disconnect().await.ok();
    pump.abort();
    let db = iot_gateway::store::open(&store_path).await.expect("store");
    use sea_orm::{ConnectionTrait, Statement};
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!(
                "SELECT COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq), SUM(batch_id IS NULL) \
                 FROM iot_reading WHERE device = '{did}'"
            ),
        ))
        .await
        .expect("query")
        .expect("row");
    let counts: Vec<i64> = (0..5)
        .map(|i| {
            row.try_get_by_index::<Option<i64>>(i)
                .expect("count")
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(counts, vec![TOTAL as i64, TOTAL as i64, 1, TOTAL as i64, 0]);
    let pending = count(
        &db,
        "SELECT COUNT(*) FROM iot_batch WHERE status <> 'anchored'",
    )
    .await;
    assert_eq!(pending, 0);
    // Each kill hit a gateway in the middle of the stream: it had stored part of it.
    assert!(
        killed_with[0] > 0 && killed_with[0] <= 500 && killed_with[1] > killed_with[0],
        "stored when killed: {killed_with:?}"
    );
    assert!(batches.len() >= 2, "{} batches", batches.len());
}

/// Readings in the gateway's store.
async fn stored_readings(path: &std::path::Path) -> i64 {
    let db = iot_gateway::store::open(path).await.expect("store");
    let n = count(&db, "SELECT COUNT(*) FROM iot_reading").await;
    let _ = db.close().await;
    n
}

/// The single number a `SELECT COUNT(*) …` returns.
async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    use sea_orm::{ConnectionTrait, Statement};
    db.query_one_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_string(),
    ))
    .await
    .expect("query")
    .and_then(|r| r.try_get_by_index::<i64>(0).ok())
    .expect("a count")
}

/// A store made before readings lost their unique index (`reading_key UNIQUE`, an index SQLite
/// cannot drop) is rebuilt at open: every row and id kept, no unique index left on the path
/// that acknowledges device messages, and the closed-batch lookup index in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_store_loses_its_unique_reading_index_and_keeps_its_rows() {
    use sea_orm::{ConnectionTrait, Statement};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.db");
    {
        let db = Database::connect(format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .expect("db");
        // The schema and migration records exactly as stores of 2026-12-05 have them.
        for sql in [
            r#"CREATE TABLE "iot_reading" ( "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "reading_key" varchar NOT NULL UNIQUE, "device" varchar NOT NULL, "seq" bigint NOT NULL, "channel" varchar NOT NULL, "time_ms" bigint NOT NULL, "received_ms" bigint NOT NULL, "measurement" varchar NULL, "uom" varchar NULL, "value" double NULL, "uri" varchar NULL, "read_point" varchar NULL, "binding" varchar NULL, "org" varchar NOT NULL, "envelope" varchar NOT NULL, "batch_id" varchar NULL )"#,
            r#"CREATE INDEX "idx-iot_reading-batch_id" ON "iot_reading" ("batch_id")"#,
            r#"CREATE TABLE "iot_batch" ( "id" varchar NOT NULL PRIMARY KEY, "root" varchar NOT NULL, "count" integer NOT NULL, "first_ms" bigint NOT NULL, "last_ms" bigint NOT NULL, "status" varchar NOT NULL, "tx_id" varchar NULL, "height" bigint NULL, "created_ms" bigint NOT NULL, "anchored_ms" bigint NULL )"#,
            r#"CREATE INDEX "idx-iot_batch-status" ON "iot_batch" ("status")"#,
            r#"CREATE TABLE "iot_migrations" ( "version" varchar NOT NULL PRIMARY KEY, "applied_at" bigint NOT NULL )"#,
            r#"INSERT INTO iot_migrations VALUES ('store', 1), ('m0002_anchored_at', 1), ('m0003_no_device_index', 1)"#,
            r#"INSERT INTO iot_reading VALUES (7, 'did:key:a#1', 'did:key:a', 1, 'readings', 10, 11, 'gs1:Temperature', 'CEL', 4.5, NULL, NULL, NULL, 'swiftcold', '{"a":1}', 'b1'),
                                              (9, 'did:key:a#2', 'did:key:a', 2, 'readings', 20, 21, 'gs1:Temperature', 'CEL', 4.6, NULL, NULL, NULL, 'swiftcold', '{"a":2}', NULL)"#,
        ] {
            db.execute_unprepared(sql).await.expect(sql);
        }
        db.close().await.expect("close");
    }
    let db = iot_gateway::store::open(&path)
        .await
        .expect("migrated store");
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT id, reading_key, value, envelope, batch_id FROM iot_reading ORDER BY id"
                .to_string(),
        ))
        .await
        .expect("rows");
    let rows: Vec<(i64, String, f64, String, Option<String>)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get_by_index(0).expect("id"),
                r.try_get_by_index(1).expect("key"),
                r.try_get_by_index(2).expect("value"),
                r.try_get_by_index(3).expect("envelope"),
                r.try_get_by_index(4).expect("batch"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                7,
                "did:key:a#1".into(),
                4.5,
                r#"{"a":1}"#.into(),
                Some("b1".into())
            ),
            (9, "did:key:a#2".into(), 4.6, r#"{"a":2}"#.into(), None),
        ]
    );
    let unique = count(
        &db,
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'iot_reading' \
         AND name LIKE 'sqlite_autoindex%'",
    )
    .await;
    assert_eq!(unique, 0, "the unique index is gone");
    let indexes = count(
        &db,
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'iot_reading' \
         AND name IN ('idx-iot_reading-batch_id', 'idx-iot_reading-reading_key-batched')",
    )
    .await;
    assert_eq!(indexes, 2, "batch and closed-batch key indexes");
    // Ids continue after the highest kept one (AUTOINCREMENT's sequence survived the rebuild).
    db.execute_unprepared(
        "INSERT INTO iot_reading (reading_key, device, seq, channel, time_ms, received_ms, org, envelope) \
         VALUES ('did:key:a#3', 'did:key:a', 3, 'readings', 30, 31, 'swiftcold', '{}')",
    )
    .await
    .expect("insert");
    let last = count(&db, "SELECT MAX(id) FROM iot_reading").await;
    assert_eq!(last, 10);
    // The proof lookup goes through the closed-batch index.
    let plan = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "EXPLAIN QUERY PLAN SELECT * FROM iot_reading \
             WHERE batch_id IS NOT NULL AND reading_key = 'did:key:a#1'"
                .to_string(),
        ))
        .await
        .expect("plan");
    let plan: Vec<String> = plan
        .iter()
        .filter_map(|r| r.try_get_by_index::<String>(3).ok())
        .collect();
    assert!(
        plan.iter()
            .any(|p| p.contains("idx-iot_reading-reading_key-batched")),
        "{plan:?}"
    );
    // Opening again changes nothing.
    db.close().await.expect("close");
    let db = iot_gateway::store::open(&path).await.expect("reopened");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM iot_reading").await, 3);
}
