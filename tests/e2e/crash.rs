//! Crash safety of the real `trellis` binary: kill -9 under load at random moments, restart,
//! and check that every acknowledged transaction is committed exactly once and that the chain
//! verifies from genesis. Cycles: 3 by default, TRELLIS_CRASH_CYCLES to run more.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chain_core::crypto::{SigningKey, Suite};
use chain_core::keystore::Keystore;
use chain_core::node::now_ms;
use chain_core::types::build_tx;
use parking_lot::Mutex;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");
const PASS: &str = "crash-test-passphrase";

fn trellis(dir: &Path, db_url: &str) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--data-dir")
        .arg(dir)
        .env("TRELLIS_PASSPHRASE", PASS)
        .env("TRELLIS_FAST_KDF", "1")
        .env("RUST_LOG", "warn")
        .env("DATABASE_URL", db_url);
    c
}

/// Starts the node; its log (all runs) goes to `node.log` in the data directory.
fn start(dir: &Path, db_url: &str, port: u16) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("node.log"))
        .expect("node log");
    trellis(dir, db_url)
        .args([
            "node",
            "--no-demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("RUST_LOG", "warn,chain_core::node=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn trellis node")
}

/// Fails the test with the node's log attached.
fn fail_with_log(dir: &Path, msg: String) -> ! {
    let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(200).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    panic!(
        "{msg}\n--- node log (last 200 lines) ---\n{}",
        tail.join("\n")
    );
}

async fn wait_healthy(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{url}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("node did not become healthy");
}

async fn next_nonce(client: &reqwest::Client, url: &str, key: &SigningKey) -> u64 {
    let v: Value = client
        .get(format!("{url}/api/v1/accounts/{}", key.public_key()))
        .send()
        .await
        .expect("account")
        .json()
        .await
        .expect("json");
    v["next_nonce"].as_u64().unwrap_or(0)
}

/// Submits anchors from one key until the node stops answering; records acknowledged ids.
async fn load(
    client: reqwest::Client,
    url: String,
    chain_id: String,
    key: Arc<SigningKey>,
    tag: String,
    acked: Arc<Mutex<Vec<String>>>,
) {
    let mut nonce = next_nonce(&client, &url, &key).await;
    let mut i = 0u64;
    loop {
        let doc = format!("{tag}-{nonce}-{i}");
        i += 1;
        let hash = chain_core::crypto::HashAlg::Sha256
            .digest(doc.as_bytes())
            .to_hex();
        let tx = build_tx(
            Suite::Ed25519Sha256,
            &chain_id,
            &key,
            nonce,
            now_ms() + 300_000,
            "notary",
            "anchor",
            serde_json::to_vec(&json!({"key": doc, "hash": hash})).expect("json"),
        );
        let resp = client
            .post(format!("{url}/api/v1/txs"))
            .json(&json!({"tx": hex::encode(tx.bytes())}))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                acked.lock().push(tx.id().to_hex());
                nonce += 1;
            }
            Ok(r) if r.status().as_u16() == 503 => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Ok(r) => panic!("unexpected rejection {}: {:?}", r.status(), r.text().await),
            Err(_) => return, // node is gone
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_minus_nine_under_load_loses_no_acknowledged_transaction() {
    let cycles: usize = std::env::var("TRELLIS_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().expect("tempdir");
    // SQLite in the temp dir, or a fresh PostgreSQL database when TRELLIS_TEST_DATABASE_URL is set.
    let db_url = crate::common::fresh_database(dir.path()).await;
    let st = trellis(dir.path(), &db_url)
        .arg("init")
        .output()
        .expect("init");
    assert!(
        st.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let ks = Keystore::open(dir.path().join("keystore")).expect("keystore");
    let keys: Vec<Arc<SigningKey>> = ["acme-admin", "swiftcold-admin", "freshmart-admin"]
        .iter()
        .map(|l| Arc::new(ks.load(l, PASS).expect("load key")))
        .collect();
    let genesis: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("genesis.json")).expect("genesis"))
            .expect("json");
    let chain_id = genesis["chain_id"].as_str().expect("chain id").to_string();
    let client = reqwest::Client::new();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut seed = now_ms();

    for cycle in 0..cycles {
        let port = crate::common::free_port();
        let url = format!("http://127.0.0.1:{port}");
        let mut child = start(dir.path(), &db_url, port);
        wait_healthy(&client, &url).await;
        let tasks: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(k, key)| {
                tokio::spawn(load(
                    client.clone(),
                    url.clone(),
                    chain_id.clone(),
                    key.clone(),
                    format!("c{cycle}k{k}"),
                    acked.clone(),
                ))
            })
            .collect();
        // kill at a pseudo-random moment between 300 and 1800 ms into the load
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = 300 + (seed >> 33) % 1500;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        child.kill().expect("kill -9");
        let _ = child.wait();
        for t in tasks {
            let _ = t.await;
        }
    }

    // Final restart: everything acknowledged must get committed, exactly once.
    let port = crate::common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = start(dir.path(), &db_url, port);
    wait_healthy(&client, &url).await;
    let acked = acked.lock().clone();
    assert!(
        acked.len() > 20,
        "the load generator made too little progress ({} acks)",
        acked.len()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut heights: HashMap<String, u64> = HashMap::new();
    for id in &acked {
        loop {
            let v: Value = client
                .get(format!("{url}/api/v1/txs/{id}"))
                .send()
                .await
                .expect("get tx")
                .json()
                .await
                .unwrap_or(Value::Null);
            if v["status"] == "committed" {
                heights.insert(id.clone(), v["height"].as_u64().expect("height"));
                break;
            }
            if v["status"] != "pending" {
                fail_with_log(
                    dir.path(),
                    format!("acknowledged transaction {id} was lost after kill -9: {v}"),
                );
            }
            if Instant::now() >= deadline {
                fail_with_log(
                    dir.path(),
                    format!("acknowledged transaction {id} never committed"),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Exactly once: every anchor event corresponds to one transaction id.
    let ev: Value = client
        .get(format!(
            "{url}/api/v1/events?contract=notary&kind=anchored&limit=1000"
        ))
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    let mut seen = std::collections::HashSet::new();
    for e in ev["events"].as_array().expect("events") {
        assert!(
            seen.insert(e["tx_id"].as_str().expect("tx id").to_string()),
            "a transaction was applied twice"
        );
    }
    // Stop gracefully, then verify the whole chain offline from genesis.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let out = trellis(dir.path(), &db_url)
        .arg("verify-chain")
        .output()
        .expect("verify-chain");
    assert!(
        out.status.success(),
        "chain does not verify after crashes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("chain verified from genesis"));
    eprintln!(
        "crash test: {cycles} kill -9 cycles, {} acknowledged transactions all committed once",
        acked.len()
    );
}
