//! The `trellis verify` command: offline proof checking with the real binary.

use std::process::Command;

use serde_json::{Value, json};

use crate::common::TestNode;

const BIN: &str = env!("CARGO_BIN_EXE_trellis");

fn verify(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("verify")
        .args(args)
        .output()
        .expect("run trellis verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trellis_verify_checks_bundles_offline() {
    let t = TestNode::start().await;
    let v = t
        .call_ok(
            &t.key("alice"),
            "notary",
            "anchor",
            json!({"key": "cli-doc", "hash": hex::encode([5u8; 32])}),
        )
        .await;
    let id = v["tx_id"].as_str().expect("tx id").to_string();
    let (_, bundle) = t.get(&format!("/api/v1/txs/{id}/proof")).await;
    let dir = t.dir.path();
    let genesis = dir.join("genesis.json");
    std::fs::write(&genesis, serde_json::to_vec(&t.genesis).unwrap()).unwrap();
    let good = dir.join("good.json");
    std::fs::write(&good, serde_json::to_vec(&bundle).unwrap()).unwrap();

    let (ok, out) = verify(&[
        good.to_str().unwrap(),
        "--genesis",
        genesis.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("proof verified") && out.contains(&id), "{out}");

    // The validator set can also be given directly (as /api/v1/chain reports it).
    let (_, chain) = t.get("/api/v1/chain").await;
    let set = chain["validator_set"]
        .as_str()
        .expect("validator set")
        .to_string();
    let (ok, out) = verify(&[good.to_str().unwrap(), "--validator-set", &set]);
    assert!(ok, "{out}");

    // A tampered bundle is rejected with a reason, and a non-zero exit status.
    let mut bad: Value = bundle.clone();
    let header = bad["header"].as_str().unwrap().to_string();
    let flipped = format!(
        "{}{}",
        &header[..40],
        if &header[40..41] == "0" { "1" } else { "0" }
    ) + &header[41..];
    bad["header"] = Value::String(flipped);
    let bad_path = dir.join("bad.json");
    std::fs::write(&bad_path, serde_json::to_vec(&bad).unwrap()).unwrap();
    let (ok, out) = verify(&[
        bad_path.to_str().unwrap(),
        "--genesis",
        genesis.to_str().unwrap(),
    ]);
    assert!(!ok, "a tampered bundle verified: {out}");
    assert!(out.contains("proof rejected"), "{out}");
    t.shutdown().await;
}
