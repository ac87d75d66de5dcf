//! The interop proof: a Python program that knows only docs/spec/encoding.md builds, signs and
//! submits a transaction to a running node, then fetches and verifies its inclusion proof.

use std::process::Command;

use crate::common::TestNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_built_from_the_spec_interoperates() {
    let t = TestNode::start().await;
    let genesis_path = t.dir.path().join("genesis.json");
    std::fs::write(
        &genesis_path,
        serde_json::to_vec_pretty(&t.genesis).unwrap(),
    )
    .unwrap();
    let seed = hex::encode(t.key("alice").secret_bytes().as_ref());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/interop.py");
    let url = t.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, "--node", &url, "--seed-hex", &seed, "--genesis"])
            .arg(&genesis_path)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 must be installed (the test command installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "interop failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("interop ok tx_id="), "{stdout}");
    // The transaction the script sent is really on chain, as the node sees it.
    let tx_id = stdout
        .split("tx_id=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    let (status, v) = t.get(&format!("/api/v1/txs/{tx_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(v["tx"]["contract"], "notary");
    assert_eq!(v["receipt"]["status"], "ok");
    t.shutdown().await;
}
