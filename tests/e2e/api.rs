//! The node's JSON API over real HTTP: every admission error code with its HTTP status (and
//! proof that a rejection changes nothing), backpressure, the happy paths with their proofs,
//! the SSE stream, the OpenAPI document, `/healthz` and `/metrics`.

use std::time::Duration;

use chain_core::crypto::SigningKey;
use chain_core::mempool::MempoolLimits;
use chain_core::node::{NodeConfig, now_ms};
use chain_core::proof::{Claim, Fact, ProofBundle, verify_bundle};
use chain_core::types::{SignedTx, build_tx};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::{Options, TestNode};

const WAIT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------ helpers

fn body(tx: &SignedTx) -> Value {
    json!({ "tx": hex::encode(tx.bytes()) })
}

/// A 32-byte document digest for the notary, distinct per `seed`.
fn doc_hash(seed: &str) -> String {
    let mut h = hex::encode(seed.as_bytes());
    h.truncate(64);
    format!("{h:0<64}")
}

fn anchor_args(key: &str) -> Value {
    json!({ "key": key, "hash": doc_hash(key), "note": "api test" })
}

fn anchor(t: &TestNode, signer: &SigningKey, nonce: u64, key: &str) -> SignedTx {
    t.tx_with(
        signer,
        nonce,
        now_ms() + 60_000,
        "notary",
        "anchor",
        anchor_args(key),
    )
}

async fn mempool_len(t: &TestNode) -> u64 {
    let (s, v) = t.get("/api/v1/chain").await;
    assert_eq!(s, 200, "{v}");
    v["mempool"].as_u64().expect("mempool is a number")
}

/// (committed next nonce, pending count) of a key.
async fn account_nonce(t: &TestNode, key: &SigningKey) -> (u64, u64) {
    let (s, v) = t
        .get(&format!("/api/v1/accounts/{}", key.public_key()))
        .await;
    assert_eq!(s, 200, "{v}");
    (v["nonce"].as_u64().unwrap(), v["pending"].as_u64().unwrap())
}

fn assert_error(status: u16, v: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "unexpected status; body: {v}");
    assert_eq!(v["error"]["code"], want_code, "unexpected code; body: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without message: {v}"
    );
}

async fn assert_tx_absent(t: &TestNode, id: &str) {
    let (s, v) = t.get(&format!("/api/v1/txs/{id}")).await;
    assert_error(s, &v, 404, "not_found");
    let (s, v) = t.get(&format!("/api/v1/txs/{id}/proof")).await;
    assert_error(s, &v, 404, "not_found");
}

/// What a rejection must leave untouched.
struct Snapshot {
    account: Option<(u64, u64)>,
    height: u64,
    mempool: u64,
}

async fn snapshot(t: &TestNode, sender: Option<&SigningKey>) -> Snapshot {
    let account = match sender {
        Some(k) => Some(account_nonce(t, k).await),
        None => None,
    };
    let (_, chain) = t.get("/api/v1/chain").await;
    Snapshot {
        account,
        height: chain["height"].as_u64().unwrap(),
        mempool: chain["mempool"].as_u64().unwrap(),
    }
}

/// Submit `req`, require the error `(status, code)`, and check that nothing changed: the
/// sender's nonce and pending count, the chain height, the pool size (`mempool_after`), and
/// that the rejected transaction (when its id is computable) is unknown to the node.
async fn expect_rejected(
    t: &TestNode,
    req: Value,
    status: u16,
    code: &str,
    sender: Option<&SigningKey>,
    tx_id: Option<String>,
    mempool_after: u64,
) -> Value {
    let before = snapshot(t, sender).await;
    let (s, v) = t.submit_raw(req).await;
    assert_error(s, &v, status, code);
    let after = snapshot(t, sender).await;
    assert_eq!(
        after.account, before.account,
        "sender account changed after a rejected submission"
    );
    assert_eq!(
        after.height, before.height,
        "a block was committed after a rejected submission"
    );
    assert_eq!(
        after.mempool, before.mempool,
        "pool changed after a rejected submission"
    );
    assert_eq!(
        after.mempool, mempool_after,
        "unexpected pool size after a rejected submission"
    );
    if let Some(id) = tx_id {
        assert_tx_absent(t, &id).await;
    }
    v
}

/// Poll `GET /api/v1/txs/{id}` until it is committed.
async fn wait_committed(t: &TestNode, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (s, v) = t.get(&format!("/api/v1/txs/{id}")).await;
        assert_eq!(s, 200, "{v}");
        if v["status"] == "committed" {
            return v;
        }
        assert_eq!(v["status"], "pending", "{v}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "tx {id} not committed within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Replace the hex digit at `pos` with a different one.
fn tamper_hex(s: &str, pos: usize) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    chars[pos] = if chars[pos] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

fn key_path(key: &str) -> String {
    crate::common::url_key(key)
}

// ------------------------------------------------------------------ malformed input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_hex_tx_is_malformed() {
    let t = TestNode::start().await;
    expect_rejected(
        &t,
        json!({"tx": "not hex at all!"}),
        400,
        "malformed",
        None,
        None,
        0,
    )
    .await;
    expect_rejected(&t, json!({"tx": "abc"}), 400, "malformed", None, None, 0).await;
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hex_that_is_not_a_signed_tx_is_malformed() {
    let t = TestNode::start().await;
    expect_rejected(
        &t,
        json!({"tx": "deadbeef"}),
        400,
        "malformed",
        None,
        None,
        0,
    )
    .await;
    expect_rejected(&t, json!({"tx": ""}), 400, "malformed", None, None, 0).await;
    // A valid transaction with trailing garbage is not canonical.
    let tx = anchor(&t, &t.key("alice"), 0, "trailing");
    let mut raw = tx.bytes().to_vec();
    raw.push(0);
    let id = t.node.hash_alg().digest(&raw).to_hex();
    let alice = t.key("alice");
    expect_rejected(
        &t,
        json!({"tx": hex::encode(&raw)}),
        400,
        "malformed",
        Some(&alice),
        Some(id),
        0,
    )
    .await;
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_tx_is_malformed() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    let tx = anchor(&t, &alice, 0, "truncated");
    let raw = tx.bytes();
    for cut in [1, 10, raw.len() / 2, raw.len() - 1] {
        let short = &raw[..raw.len() - cut];
        let id = t.node.hash_alg().digest(short).to_hex();
        expect_rejected(
            &t,
            json!({"tx": hex::encode(short)}),
            400,
            "malformed",
            Some(&alice),
            Some(id),
            0,
        )
        .await;
    }
    // The full transaction was never admitted either.
    assert_tx_absent(&t, &tx.id().to_hex()).await;
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_that_is_not_json_or_lacks_tx_is_malformed() {
    let t = TestNode::start().await;
    for raw_body in ["{not json", "", "[1,2,3]", "{\"tx\": 5}"] {
        let before = snapshot(&t, None).await;
        let r = t
            .client
            .post(format!("{}/api/v1/txs", t.url))
            .header("content-type", "application/json")
            .body(raw_body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_error(status, &v, 400, "malformed");
        let after = snapshot(&t, None).await;
        assert_eq!(
            (after.height, after.mempool),
            (before.height, before.mempool)
        );
        assert_eq!(after.mempool, 0);
    }
    // Missing `tx`, and an unknown wait mode, are malformed too.
    expect_rejected(
        &t,
        json!({"transaction": "00"}),
        400,
        "malformed",
        None,
        None,
        0,
    )
    .await;
    let alice = t.key("alice");
    let tx = anchor(&t, &alice, 0, "bad-wait");
    let req = json!({"tx": hex::encode(tx.bytes()), "wait": "forever"});
    expect_rejected(
        &t,
        req,
        400,
        "malformed",
        Some(&alice),
        Some(tx.id().to_hex()),
        0,
    )
    .await;
    t.shutdown().await;
}

// ------------------------------------------------------------------ admission errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_tx_is_rejected_with_413() {
    let cfg = NodeConfig {
        max_tx_bytes: 2048,
        ..Default::default()
    };
    let t = TestNode::start_with(Options {
        cfg,
        ..Default::default()
    })
    .await;
    let alice = t.key("alice");
    let args = json!({"key": "big", "hash": doc_hash("big"), "note": "x".repeat(3000)});
    let tx = t.tx_with(&alice, 0, now_ms() + 60_000, "notary", "anchor", args);
    assert!(tx.bytes().len() > 2048);
    let v = expect_rejected(
        &t,
        body(&tx),
        413,
        "oversized",
        Some(&alice),
        Some(tx.id().to_hex()),
        0,
    )
    .await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("2048"),
        "{v}"
    );
    // Just under the limit is fine.
    let args = json!({"key": "small", "hash": doc_hash("small"), "note": "x".repeat(900)});
    let ok = t.tx_with(&alice, 0, now_ms() + 60_000, "notary", "anchor", args);
    assert!(ok.bytes().len() <= 2048);
    let (s, v) = t.submit_wait(&ok).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["receipt"]["status"], "ok", "{v}");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_signature_bit_is_bad_signature() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    let tx = anchor(&t, &alice, 0, "forged");
    let mut raw = tx.bytes().to_vec();
    // Ed25519: the last 64 bytes are the signature (R then S); flip a bit of R.
    let n = raw.len();
    raw[n - 64] ^= 0x01;
    let id = t.node.hash_alg().digest(&raw).to_hex();
    expect_rejected(
        &t,
        json!({"tx": hex::encode(&raw)}),
        400,
        "bad_signature",
        Some(&alice),
        Some(id),
        0,
    )
    .await;
    // The same with wait=commit.
    let mut raw2 = tx.bytes().to_vec();
    raw2[n - 1] ^= 0x80;
    let id2 = t.node.hash_alg().digest(&raw2).to_hex();
    let req = json!({"tx": hex::encode(&raw2), "wait": "commit", "timeout_ms": 2000});
    expect_rejected(&t, req, 400, "bad_signature", Some(&alice), Some(id2), 0).await;
    assert_tx_absent(&t, &tx.id().to_hex()).await;
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_for_another_chain_is_wrong_chain() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    let tx = build_tx(
        t.suite,
        "some-other-chain",
        &alice,
        0,
        now_ms() + 60_000,
        "notary",
        "anchor",
        serde_json::to_vec(&anchor_args("elsewhere")).unwrap(),
    );
    expect_rejected(
        &t,
        body(&tx),
        400,
        "wrong_chain",
        Some(&alice),
        Some(tx.id().to_hex()),
        0,
    )
    .await;
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_nonce_is_stale_and_resubmission_is_duplicate() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    let first = anchor(&t, &alice, 0, "first");
    let (s, v) = t.submit_wait(&first).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(account_nonce(&t, &alice).await, (1, 0));

    let other = anchor(&t, &alice, 0, "second");
    let v = expect_rejected(
        &t,
        body(&other),
        409,
        "stale_nonce",
        Some(&alice),
        Some(other.id().to_hex()),
        0,
    )
    .await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("next nonce is 1"),
        "{v}"
    );

    // The exact committed transaction again: duplicate, and it stays committed once.
    let before = t.get(&format!("/api/v1/txs/{}", first.id())).await.1;
    expect_rejected(&t, body(&first), 409, "duplicate", Some(&alice), None, 0).await;
    let req = json!({"tx": hex::encode(first.bytes()), "wait": "commit"});
    expect_rejected(&t, req, 409, "duplicate", Some(&alice), None, 0).await;
    let after = t.get(&format!("/api/v1/txs/{}", first.id())).await.1;
    assert_eq!(before, after);
    assert_eq!(after["status"], "committed");
    let (_, acc) = t
        .get(&format!("/api/v1/accounts/{}", alice.public_key()))
        .await;
    assert_eq!(acc["recent_txs"].as_array().unwrap().len(), 1, "{acc}");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_resubmission_is_duplicate() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    // Nonce 1 without nonce 0 stays pending.
    let tx = anchor(&t, &alice, 1, "pending-dup");
    let (s, v) = t.submit_raw(body(&tx)).await;
    assert_eq!(s, 202, "{v}");
    expect_rejected(&t, body(&tx), 409, "duplicate", Some(&alice), None, 1).await;
    let (s, v) = t.get(&format!("/api/v1/txs/{}", tx.id())).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "pending");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_beyond_the_gap_is_future_nonce() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    t.call_ok(&alice, "notary", "anchor", anchor_args("gap-base"))
        .await;
    let (committed, _) = account_nonce(&t, &alice).await;
    assert_eq!(committed, 1);
    let gap = t.node.cfg.mempool.max_nonce_gap;
    let tx = anchor(&t, &alice, committed + gap + 1, "too-far");
    let v = expect_rejected(
        &t,
        body(&tx),
        400,
        "future_nonce",
        Some(&alice),
        Some(tx.id().to_hex()),
        0,
    )
    .await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("max gap"),
        "{v}"
    );
    // Exactly at the gap is admitted (and waits for the missing nonces).
    let edge = anchor(&t, &alice, committed + gap, "at-the-edge");
    let (s, v) = t.submit_raw(body(&edge)).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(mempool_len(&t).await, 1);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_expiry_is_expired() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    let tx = t.tx_with(
        &alice,
        0,
        now_ms() - 1_000,
        "notary",
        "anchor",
        anchor_args("late"),
    );
    expect_rejected(
        &t,
        body(&tx),
        400,
        "expired",
        Some(&alice),
        Some(tx.id().to_hex()),
        0,
    )
    .await;
    let req = json!({"tx": hex::encode(tx.bytes()), "wait": "commit"});
    expect_rejected(
        &t,
        req,
        400,
        "expired",
        Some(&alice),
        Some(tx.id().to_hex()),
        0,
    )
    .await;
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_contract_is_rejected() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    let tx = t.tx_with(
        &alice,
        0,
        now_ms() + 60_000,
        "no-such-contract",
        "anchor",
        json!({}),
    );
    expect_rejected(
        &t,
        body(&tx),
        400,
        "unknown_contract",
        Some(&alice),
        Some(tx.id().to_hex()),
        0,
    )
    .await;
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_method_is_rejected() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    let tx = t.tx_with(
        &alice,
        0,
        now_ms() + 60_000,
        "notary",
        "unanchor",
        anchor_args("m"),
    );
    expect_rejected(
        &t,
        body(&tx),
        400,
        "unknown_method",
        Some(&alice),
        Some(tx.id().to_hex()),
        0,
    )
    .await;
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_key_is_not_permitted() {
    let t = TestNode::start().await;
    let stranger = t.key("stranger");
    let tx = anchor(&t, &stranger, 0, "intruder");
    expect_rejected(
        &t,
        body(&tx),
        403,
        "not_permitted",
        Some(&stranger),
        Some(tx.id().to_hex()),
        0,
    )
    .await;
    let (_, acc) = t
        .get(&format!("/api/v1/accounts/{}", stranger.public_key()))
        .await;
    assert_eq!(acc["nonce"], 0);
    assert_eq!(acc["member"], Value::Null, "{acc}");
    assert_eq!(acc["key_status"], Value::Null, "{acc}");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_pending_tx_with_the_same_nonce_is_nonce_in_use() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    // Nonce 1 while nonce 0 was never sent: it waits in the pool.
    let a = anchor(&t, &alice, 1, "first-at-1");
    let (s, v) = t.submit_raw(body(&a)).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["status"], "pending");
    assert_eq!(account_nonce(&t, &alice).await, (0, 1));

    let b = anchor(&t, &alice, 1, "second-at-1");
    expect_rejected(
        &t,
        body(&b),
        409,
        "nonce_in_use",
        Some(&alice),
        Some(b.id().to_hex()),
        1,
    )
    .await;
    // The first one is still the pending one.
    let (s, v) = t.get(&format!("/api/v1/txs/{}", a.id())).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "pending");
    t.shutdown().await;
}

// ------------------------------------------------------------------ backpressure

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mempool_answers_503_with_retry_after() {
    let cfg = NodeConfig {
        mempool: MempoolLimits {
            max_txs: 3,
            ..Default::default()
        },
        ..Default::default()
    };
    let t = TestNode::start_with(Options {
        cfg,
        ..Default::default()
    })
    .await;
    let alice = t.key("alice");
    // Nonces 1..=3 while 0 is never sent: nothing can commit, the pool fills up.
    for n in 1..=3 {
        let tx = anchor(&t, &alice, n, &format!("fill-{n}"));
        let (s, v) = t.submit_raw(body(&tx)).await;
        assert_eq!(s, 202, "{v}");
    }
    assert_eq!(mempool_len(&t).await, 3);
    assert_eq!(account_nonce(&t, &alice).await, (0, 3));

    let admin = t.key("acme-admin");
    for (signer, nonce, key) in [
        (&alice, 4, "overflow-4"),
        (&alice, 0, "overflow-0"),
        (&admin, 0, "overflow-admin"),
    ] {
        let tx = anchor(&t, signer, nonce, key);
        let before = snapshot(&t, Some(signer)).await;
        let r = t
            .client
            .post(format!("{}/api/v1/txs", t.url))
            .json(&body(&tx))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|h| h.to_str().unwrap().to_string());
        let v: Value = r.json().await.unwrap();
        assert_error(status, &v, 503, "mempool_full");
        let secs: u64 = retry_after
            .expect("503 carries Retry-After")
            .parse()
            .expect("Retry-After is seconds");
        assert!(secs >= 1);
        let after = snapshot(&t, Some(signer)).await;
        assert_eq!(after.account, before.account);
        assert_eq!(after.height, before.height);
        assert_eq!(after.mempool, 3);
        assert_tx_absent(&t, &tx.id().to_hex()).await;
    }
    t.shutdown().await;
}

// ------------------------------------------------------------------ happy paths

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_waiting_for_commit_returns_the_receipt() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    let tx = anchor(&t, &alice, 0, "committed-doc");
    let (s, v) = t.submit_wait(&tx).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["tx_id"], tx.id().to_hex());
    assert_eq!(v["status"], "committed");
    assert!(v["height"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["index"], 0);
    assert_eq!(v["receipt"]["status"], "ok", "{v}");
    assert_eq!(v["receipt"]["code"], "");
    let events = v["receipt"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{v}");
    assert_eq!(events[0]["contract"], "notary");
    assert_eq!(events[0]["kind"], "anchored");
    assert_eq!(events[0]["data"]["key"], "committed-doc");
    assert_eq!(events[0]["data"]["by"], "acme/alice");
    assert_eq!(account_nonce(&t, &alice).await, (1, 0));
    assert_eq!(mempool_len(&t).await, 0);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_without_wait_is_pending_then_committed_with_decoded_args() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    let tx = anchor(&t, &alice, 0, "async-doc");
    let (s, v) = t.submit_raw(body(&tx)).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["status"], "pending");
    assert_eq!(v["tx_id"], tx.id().to_hex());
    assert!(v.get("height").is_none(), "{v}");
    let v = wait_committed(&t, &tx.id().to_hex()).await;
    assert_eq!(v["id"], tx.id().to_hex());
    assert!(v["height"].as_u64().unwrap() >= 1);
    assert_eq!(v["index"], 0);
    assert_eq!(v["receipt"]["status"], "ok", "{v}");
    let body = &v["tx"];
    assert_eq!(body["id"], tx.id().to_hex());
    assert_eq!(body["chain_id"], t.chain_id);
    assert_eq!(body["sender"], alice.public_key().to_text());
    assert!(
        body["sender_did"]
            .as_str()
            .unwrap()
            .starts_with("did:key:z6Mk"),
        "{v}"
    );
    assert_eq!(body["nonce"], 0);
    assert_eq!(body["contract"], "notary");
    assert_eq!(body["method"], "anchor");
    assert_eq!(
        body["args"],
        anchor_args("async-doc"),
        "args are shown decoded: {v}"
    );
    assert_eq!(body["size"], tx.bytes().len());
    assert_eq!(body["signature"], tx.signature.to_text());
    // `wait: "admission"` is the explicit default.
    let tx2 = anchor(&t, &alice, 1, "async-doc-2");
    let (s, v) = t
        .submit_raw(json!({"tx": hex::encode(tx2.bytes()), "wait": "admission"}))
        .await;
    assert_eq!(s, 202, "{v}");
    wait_committed(&t, &tx2.id().to_hex()).await;
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_proof_verifies_and_any_tampering_breaks_it() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    let trusted = t.genesis.validator_set().unwrap();
    // Nonce 1 first (waits), then nonce 0: both go into one block, so proofs have a path.
    let second = anchor(&t, &alice, 1, "proof-b");
    let (s, v) = t.submit_raw(body(&second)).await;
    assert_eq!(s, 202, "{v}");
    let first = anchor(&t, &alice, 0, "proof-a");
    let (s, v) = t.submit_wait(&first).await;
    assert_eq!(s, 200, "{v}");
    let height = v["height"].as_u64().unwrap();
    let v2 = wait_committed(&t, &second.id().to_hex()).await;
    assert_eq!(
        v2["height"].as_u64().unwrap(),
        height,
        "both transactions share a block"
    );

    for (tx, index) in [(&first, 0u64), (&second, 1u64)] {
        let (s, v) = t.get(&format!("/api/v1/txs/{}/proof", tx.id())).await;
        assert_eq!(s, 200, "{v}");
        let bundle: ProofBundle = serde_json::from_value(v).expect("proof is a bundle");
        assert_eq!(bundle.chain_id, t.chain_id);
        let ok = verify_bundle(&bundle, &trusted).expect("proof verifies");
        assert_eq!(ok.height, height);
        assert_eq!(ok.chain_id, t.chain_id);
        match &ok.fact {
            Fact::TxIncluded {
                tx_id,
                contract,
                method,
                sender,
                ..
            } => {
                assert_eq!(tx_id, &tx.id().to_hex());
                assert_eq!(contract, "notary");
                assert_eq!(method, "anchor");
                assert_eq!(sender, &alice.public_key().to_text());
            }
            other => panic!("unexpected fact {other:?}"),
        }
        let Claim::TxInclusion {
            index: i,
            tx_count,
            path,
            ..
        } = &bundle.claim
        else {
            panic!("not a tx inclusion claim");
        };
        assert_eq!((*i, *tx_count), (index, 2));
        assert_eq!(path.len(), 1);

        let mut bad = bundle.clone();
        bad.header = tamper_hex(&bad.header, bad.header.len() / 2);
        assert!(
            verify_bundle(&bad, &trusted).is_err(),
            "tampered header verified"
        );

        let mut bad = bundle.clone();
        bad.commit = tamper_hex(&bad.commit, bad.commit.len() - 10);
        assert!(
            verify_bundle(&bad, &trusted).is_err(),
            "tampered commit verified"
        );

        let mut bad = bundle.clone();
        if let Claim::TxInclusion { tx, .. } = &mut bad.claim {
            *tx = tamper_hex(tx, tx.len() / 2);
        }
        assert!(
            verify_bundle(&bad, &trusted).is_err(),
            "tampered tx verified"
        );

        let mut bad = bundle.clone();
        if let Claim::TxInclusion { path, .. } = &mut bad.claim {
            path[0] = tamper_hex(&path[0], 0);
        }
        assert!(
            verify_bundle(&bad, &trusted).is_err(),
            "tampered path verified"
        );

        let mut bad = bundle.clone();
        if let Claim::TxInclusion { receipt, .. } = &mut bad.claim {
            let n = receipt.len();
            *receipt = tamper_hex(receipt, n - 1);
        }
        assert!(
            verify_bundle(&bad, &trusted).is_err(),
            "tampered receipt verified"
        );

        let mut bad = bundle.clone();
        if let Claim::TxInclusion { index, .. } = &mut bad.claim {
            *index = 1 - *index;
        }
        assert!(
            verify_bundle(&bad, &trusted).is_err(),
            "wrong index verified"
        );

        // A validator set the verifier does not trust.
        let other = crate::common::test_genesis(t.suite, "x");
        let mut untrusted = other;
        untrusted.validators[0].public_key = t.key("someone-else").public_key();
        assert!(verify_bundle(&bundle, &untrusted.validator_set().unwrap()).is_err());
    }
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_by_height_hash_latest_and_list() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    t.call_ok(&alice, "notary", "anchor", anchor_args("block-a"))
        .await;
    let tx = anchor(&t, &alice, 1, "block-b");
    let (s, v) = t.submit_wait(&tx).await;
    assert_eq!(s, 200, "{v}");
    let height = v["height"].as_u64().unwrap();

    let (s, by_height) = t.get(&format!("/api/v1/blocks/{height}")).await;
    assert_eq!(s, 200, "{by_height}");
    assert_eq!(by_height["height"], height);
    assert_eq!(by_height["chain_id"], t.chain_id);
    let hash = by_height["hash"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 64);
    let (s, by_hash) = t.get(&format!("/api/v1/blocks/{hash}")).await;
    assert_eq!(s, 200, "{by_hash}");
    assert_eq!(by_height, by_hash);
    assert_eq!(by_height["tx_count"], 1);
    let txs = by_height["txs"].as_array().unwrap();
    assert_eq!(txs.len(), 1);
    assert_eq!(txs[0]["id"], tx.id().to_hex());
    assert_eq!(txs[0]["contract"], "notary");
    assert_eq!(txs[0]["method"], "anchor");
    assert_eq!(txs[0]["ok"], true);
    assert_eq!(
        by_height["commit"]["signatures"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        by_height["commit"]["signatures"][0]["validator"],
        t.key("validator").public_key().to_text()
    );
    assert_eq!(
        by_height["proposer"],
        t.key("validator").public_key().to_text()
    );

    let (s, latest) = t.get("/api/v1/blocks/latest").await;
    assert_eq!(s, 200, "{latest}");
    assert_eq!(latest, by_height);
    let (_, chain) = t.get("/api/v1/chain").await;
    assert_eq!(chain["height"], height);
    assert_eq!(chain["latest_hash"], hash);

    let (s, list) = t.get("/api/v1/blocks?limit=2").await;
    assert_eq!(s, 200, "{list}");
    let blocks = list["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0]["height"], height);
    assert_eq!(blocks[1]["height"], height - 1);
    assert_eq!(blocks[0]["prev_hash"], blocks[1]["hash"]);
    assert_eq!(blocks[0]["hash"], hash);
    assert!(blocks[0].get("txs").is_none(), "lists carry no tx bodies");

    let (s, list) = t
        .get(&format!("/api/v1/blocks?before={height}&limit=100"))
        .await;
    assert_eq!(s, 200, "{list}");
    let heights: Vec<u64> = list["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["height"].as_u64().unwrap())
        .collect();
    assert_eq!(heights, (0..height).rev().collect::<Vec<_>>());

    let (s, genesis) = t.get("/api/v1/blocks/0").await;
    assert_eq!(s, 200, "{genesis}");
    assert_eq!(genesis["hash"], chain["genesis_hash"]);
    assert_eq!(genesis["tx_count"], 0);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_endpoint_proves_presence_and_absence() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    let trusted = t.genesis.validator_set().unwrap();
    // An earlier block, so that the historical query below is about a signed block (the
    // genesis block carries no commit signatures, so proofs at height 0 cannot verify).
    t.call_ok(&alice, "notary", "anchor", anchor_args("state-warmup"))
        .await;
    let key = "state-doc 1";
    let v = t
        .call_ok(&alice, "notary", "anchor", anchor_args(key))
        .await;
    let height = v["height"].as_u64().unwrap();

    let path = format!("/api/v1/state/notary/{}", key_path(&format!("doc/{key}")));
    assert!(path.contains("doc%2Fstate-doc%201"), "{path}");
    let (s, v) = t.get(&path).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["contract"], "notary");
    assert_eq!(v["key"], format!("doc/{key}"));
    assert_eq!(v["exists"], true, "{v}");
    assert_eq!(v["value"]["hash"], doc_hash(key));
    assert_eq!(v["value"]["by"], "acme/alice");
    assert_eq!(v["value"]["height"], height);
    let bundle: ProofBundle =
        serde_json::from_value(v["proof"].clone()).expect("proof is a bundle");
    let ok = verify_bundle(&bundle, &trusted).expect("state proof verifies");
    assert_eq!(ok.height, height);
    match &ok.fact {
        Fact::StateValue {
            contract,
            key: k,
            value,
        } => {
            assert_eq!(contract, "notary");
            assert_eq!(k, &hex::encode(format!("doc/{key}")));
            assert_eq!(value.as_deref(), v["value_hex"].as_str());
        }
        other => panic!("unexpected fact {other:?}"),
    }
    // Claiming another value breaks the proof.
    let mut bad = bundle.clone();
    if let Claim::State { value, .. } = &mut bad.claim {
        *value = Some(hex::encode(b"{\"hash\":\"forged\"}"));
    }
    assert!(verify_bundle(&bad, &trusted).is_err());
    // Claiming absence breaks it too.
    let mut bad = bundle.clone();
    if let Claim::State { value, .. } = &mut bad.claim {
        *value = None;
    }
    assert!(verify_bundle(&bad, &trusted).is_err());

    // The same key with key_encoding=hex.
    let (s, vh) = t
        .get(&format!(
            "/api/v1/state/notary/{}?key_encoding=hex",
            hex::encode(format!("doc/{key}"))
        ))
        .await;
    assert_eq!(s, 200, "{vh}");
    assert_eq!(vh["value"], v["value"]);

    // Missing key: exists=false with an absence proof that verifies.
    let (s, v) = t.get("/api/v1/state/notary/doc%2Fnever-anchored").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["exists"], false, "{v}");
    assert_eq!(v["value"], Value::Null);
    let bundle: ProofBundle =
        serde_json::from_value(v["proof"].clone()).expect("proof is a bundle");
    let ok = verify_bundle(&bundle, &trusted).expect("absence proof verifies");
    match &ok.fact {
        Fact::StateValue { value, .. } => assert_eq!(value, &None),
        other => panic!("unexpected fact {other:?}"),
    }
    // Claiming a value for an absent key fails.
    let mut bad = bundle.clone();
    if let Claim::State { value, .. } = &mut bad.claim {
        *value = Some(hex::encode(b"{}"));
    }
    assert!(verify_bundle(&bad, &trusted).is_err());

    // Before the anchor (historical height) the key did not exist.
    let (s, v) = t.get(&format!("{path}?height={}", height - 1)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["exists"], false, "{v}");
    let bundle: ProofBundle = serde_json::from_value(v["proof"].clone()).unwrap();
    assert_eq!(verify_bundle(&bundle, &trusted).unwrap().height, height - 1);

    // Errors: unknown contract, future height, bad encodings.
    let (s, v) = t.get("/api/v1/state/nope/doc%2Fx").await;
    assert_error(s, &v, 404, "unknown_contract");
    let (s, v) = t.get(&format!("{path}?height={}", height + 100)).await;
    assert_error(s, &v, 404, "not_found");
    let (s, v) = t.get("/api/v1/state/notary/zz?key_encoding=hex").await;
    assert_error(s, &v, 400, "malformed");
    let (s, v) = t.get("/api/v1/state/notary/x?key_encoding=base64").await;
    assert_error(s, &v, 400, "malformed");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_query_filters_by_contract_kind_and_heights() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    let tx = anchor(&t, &alice, 0, "event-doc");
    let (s, v) = t.submit_wait(&tx).await;
    assert_eq!(s, 200, "{v}");
    let h = v["height"].as_u64().unwrap();
    let id = tx.id().to_hex();

    let q = |from: u64, to: u64| {
        format!("/api/v1/events?contract=notary&kind=anchored&from_height={from}&to_height={to}")
    };
    let (s, v) = t.get(&q(h, h)).await;
    assert_eq!(s, 200, "{v}");
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{v}");
    assert_eq!(events[0]["tx_id"], id);
    assert_eq!(events[0]["height"], h);
    assert_eq!(events[0]["tx_index"], 0);
    assert_eq!(events[0]["event_index"], 0);
    assert_eq!(events[0]["contract"], "notary");
    assert_eq!(events[0]["kind"], "anchored");
    assert_eq!(events[0]["data"]["key"], "event-doc");
    assert_eq!(events[0]["data"]["by"], "acme/alice");

    for (from, to) in [(h + 1, h + 10), (0, h - 1)] {
        let (s, v) = t.get(&q(from, to)).await;
        assert_eq!(s, 200, "{v}");
        assert!(
            v["events"].as_array().unwrap().is_empty(),
            "range {from}..={to}: {v}"
        );
    }
    let (s, v) = t.get("/api/v1/events?contract=notary&kind=revoked").await;
    assert_eq!(s, 200);
    assert!(v["events"].as_array().unwrap().is_empty(), "{v}");
    let (s, v) = t.get("/api/v1/events?contract=system").await;
    assert_eq!(s, 200);
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["contract"] == "system"),
        "{v}"
    );
    let (s, v) = t.get("/api/v1/events?contract=notary").await;
    assert_eq!(s, 200);
    assert_eq!(v["events"].as_array().unwrap().len(), 1, "{v}");

    let (s, v) = t.get(&q(h + 1, h)).await;
    assert_error(s, &v, 400, "malformed");
    let (s, v) = t.get("/api/v1/events?from_height=abc").await;
    assert_eq!(s, 400, "{v}");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_endpoint_shows_nonce_roles_member_and_did() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    let v = t
        .call_ok(&alice, "notary", "anchor", anchor_args("acct"))
        .await;
    let tx_id = v["tx_id"].as_str().unwrap().to_string();

    let (s, v) = t
        .get(&format!("/api/v1/accounts/{}", alice.public_key()))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["public_key"], alice.public_key().to_text());
    assert_eq!(v["nonce"], 1);
    assert_eq!(v["pending"], 0);
    assert_eq!(v["member"], "acme/alice");
    assert_eq!(v["organisation"], "acme");
    assert_eq!(v["key_status"], "active");
    assert_eq!(v["roles"], json!(["trace.operator"]));
    let did = v["did"].as_str().unwrap().to_string();
    assert!(did.starts_with("did:key:z6Mk"), "{did}");
    let recent = v["recent_txs"].as_array().unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0]["id"], tx_id);
    assert_eq!(recent[0]["nonce"], 0);

    // The did:key form addresses the same account.
    let (s, by_did) = t.get(&format!("/api/v1/accounts/{did}")).await;
    assert_eq!(s, 200, "{by_did}");
    assert_eq!(by_did, v);

    let (s, v) = t.get("/api/v1/accounts/not-a-key").await;
    assert_error(s, &v, 400, "malformed");
    let (s, v) = t.get("/api/v1/accounts/ed25519:zz").await;
    assert_error(s, &v, 400, "malformed");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_resources_are_404_and_bad_path_params_are_malformed() {
    let t = TestNode::start().await;
    let (s, v) = t.get("/api/v1/blocks/999999").await;
    assert_error(s, &v, 404, "not_found");
    let (s, v) = t.get(&format!("/api/v1/blocks/{}", "ab".repeat(32))).await;
    assert_error(s, &v, 404, "not_found");
    let (s, v) = t.get(&format!("/api/v1/txs/{}", "cd".repeat(32))).await;
    assert_error(s, &v, 404, "not_found");
    let (s, v) = t
        .get(&format!("/api/v1/txs/{}/proof", "cd".repeat(32)))
        .await;
    assert_error(s, &v, 404, "not_found");
    let (s, v) = t.get("/api/v1/no-such-endpoint").await;
    assert_error(s, &v, 404, "not_found");

    for path in [
        "/api/v1/blocks/not-a-height".to_string(),
        "/api/v1/blocks/-1".to_string(),
        format!("/api/v1/blocks/{}", "z".repeat(64)),
        "/api/v1/txs/xyz".to_string(),
        "/api/v1/txs/abcd".to_string(),
        "/api/v1/txs/xyz/proof".to_string(),
        "/api/v1/accounts/nope".to_string(),
    ] {
        let (s, v) = t.get(&path).await;
        assert_error(s, &v, 400, "malformed");
    }
    t.shutdown().await;
}

// ------------------------------------------------------------------ SSE

/// One parsed Server-Sent Event.
#[derive(Debug)]
struct Sse {
    event: String,
    data: String,
}

fn parse_sse(buf: &mut String) -> Vec<Sse> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let frame: String = buf.drain(..end + 2).collect();
        let mut ev = Sse {
            event: "message".into(),
            data: String::new(),
        };
        for line in frame.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                ev.event = v.trim_start().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !ev.data.is_empty() {
                    ev.data.push('\n');
                }
                ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        out.push(ev);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_stream_delivers_block_and_contract_events() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    let resp = t
        .client
        .get(format!("{}/api/v1/stream", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let mut stream = resp.bytes_stream();

    // The handler subscribed before answering, so this commit is seen by the stream.
    let tx = anchor(&t, &alice, 0, "streamed");
    let (s, v) = t.submit_wait(&tx).await;
    assert_eq!(s, 200, "{v}");
    let height = v["height"].as_u64().unwrap();
    let id = tx.id().to_hex();

    let mut buf = String::new();
    let mut block: Option<Value> = None;
    let mut event: Option<Value> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while block.is_none() || event.is_none() {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no block/contract_event within 5s; got so far: {buf:?}"))
            .expect("stream ended")
            .expect("stream error");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        for ev in parse_sse(&mut buf) {
            match ev.event.as_str() {
                "block" => {
                    let d: Value = serde_json::from_str(&ev.data).unwrap();
                    if d["height"] == height {
                        block = Some(d);
                    }
                }
                "contract_event" if ev.data.contains(&id) => {
                    event = Some(serde_json::from_str(&ev.data).unwrap());
                }
                _ => {}
            }
        }
    }
    let block = block.unwrap();
    assert_eq!(block["tx_count"], 1);
    assert_eq!(block["proposer"], t.key("validator").public_key().to_text());
    let (_, b) = t.get(&format!("/api/v1/blocks/{height}")).await;
    assert_eq!(block["hash"], b["hash"]);
    let event = event.unwrap();
    assert_eq!(event["tx_id"], id);
    assert_eq!(event["height"], height);
    assert_eq!(event["contract"], "notary");
    assert_eq!(event["kind"], "anchored");
    assert_eq!(event["data"]["key"], "streamed");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_contract_filter_skips_other_contracts() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    let resp = t
        .client
        .get(format!("{}/api/v1/stream?contract=system", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut stream = resp.bytes_stream();
    let tx = anchor(&t, &alice, 0, "filtered");
    let (s, v) = t.submit_wait(&tx).await;
    assert_eq!(s, 200, "{v}");
    let height = v["height"].as_u64().unwrap();
    // The block event always comes; it is emitted before the block's contract events, and
    // the frames of one block arrive together, so after it no notary event may follow.
    let mut buf = String::new();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("no block event in time")
            .expect("stream ended")
            .expect("stream error");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        seen.extend(parse_sse(&mut buf));
        if seen.iter().any(|e| {
            e.event == "block"
                && serde_json::from_str::<Value>(&e.data).unwrap()["height"] == height
        }) {
            break;
        }
    }
    // Commit another block so that anything belonging to the first has surely been sent.
    let tx2 = anchor(&t, &alice, 1, "filtered-2");
    let (s, v) = t.submit_wait(&tx2).await;
    assert_eq!(s, 200, "{v}");
    let h2 = v["height"].as_u64().unwrap();
    loop {
        if seen.iter().any(|e| {
            e.event == "block" && serde_json::from_str::<Value>(&e.data).unwrap()["height"] == h2
        }) {
            break;
        }
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("no second block event in time")
            .expect("stream ended")
            .expect("stream error");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        seen.extend(parse_sse(&mut buf));
    }
    assert!(
        !seen.iter().any(|e| e.event == "contract_event"),
        "notary events passed a contract=system filter: {seen:?}"
    );
    t.shutdown().await;
}

// ------------------------------------------------------------------ openapi, health, metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_the_endpoints() {
    let t = TestNode::start().await;
    let r = t
        .client
        .get(format!("{}/api/v1/openapi.json", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).expect("openapi.json is JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with('3'), "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/api/v1/txs",
        "/api/v1/txs/batch",
        "/api/v1/txs/{id}",
        "/api/v1/txs/{id}/proof",
        "/api/v1/blocks",
        "/api/v1/blocks/latest",
        "/api/v1/blocks/{id}",
        "/api/v1/accounts/{key}",
        "/api/v1/state/{contract}/{key}",
        "/api/v1/events",
        "/api/v1/chain",
        "/api/v1/stream",
    ] {
        assert!(
            paths.contains_key(p),
            "openapi lacks {p}; has {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    assert!(paths["/api/v1/txs"]["post"].is_object());
    assert!(paths["/api/v1/txs/{id}/proof"]["get"].is_object());
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_ok() {
    let t = TestNode::start().await;
    let (s, v) = t.get("/healthz").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["chain_id"], t.chain_id);
    assert_eq!(v["height"], 0);
    t.shutdown().await;
}

async fn metrics_text(t: &TestNode) -> String {
    let r = t
        .client
        .get(format!("{}/metrics", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.text().await.unwrap()
}

fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().expect("numeric sample"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_height_and_rejections_by_code() {
    let t = TestNode::start().await;
    let m = metrics_text(&t).await;
    assert_eq!(metric_value(&m, "trellis_chain_height"), Some(0.0), "{m}");
    assert!(!m.contains("code=\"bad_signature\""), "{m}");

    let alice = t.key("alice");
    t.call_ok(&alice, "notary", "anchor", anchor_args("metrics-ok"))
        .await;
    let tx = anchor(&t, &alice, 1, "metrics-forged");
    let mut raw = tx.bytes().to_vec();
    let n = raw.len();
    raw[n - 64] ^= 0x01;
    let (s, v) = t.submit_raw(json!({"tx": hex::encode(&raw)})).await;
    assert_error(s, &v, 400, "bad_signature");

    let m = metrics_text(&t).await;
    assert_eq!(metric_value(&m, "trellis_chain_height"), Some(1.0), "{m}");
    assert_eq!(
        metric_value(
            &m,
            "trellis_transactions_rejected_total{code=\"bad_signature\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "trellis_transactions_admitted_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "trellis_transactions_committed_total"),
        Some(1.0),
        "{m}"
    );
    assert!(
        m.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    t.shutdown().await;
}

// ------------------------------------------------------------------ known node bugs
//
// These describe the documented behaviour and fail on the current node; each names its bug.
// Run them with `cargo test --test e2e api:: -- --ignored` once the fix is in.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_duplicate_does_not_cut_short_another_commit_wait() {
    let t = std::sync::Arc::new(TestNode::start().await);
    let alice = t.key("alice");
    // Nonce 1 waits in the pool until nonce 0 arrives.
    let tx1 = anchor(&t, &alice, 1, "waited-for");
    let req = json!({"tx": hex::encode(tx1.bytes()), "wait": "commit", "timeout_ms": 10_000});
    let first = {
        let (t, req) = (t.clone(), req.clone());
        tokio::spawn(async move { t.submit_raw(req).await })
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while mempool_len(&t).await < 1 {
        assert!(tokio::time::Instant::now() < deadline, "tx never admitted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The same transaction again, also waiting for the commit: duplicate.
    let (s, v) = t.submit_raw(req).await;
    assert_error(s, &v, 409, "duplicate");
    // Unblock nonce 1; the first caller must get the commit, not an early 202.
    let tx0 = anchor(&t, &alice, 0, "unblocker");
    let (s, v) = t.submit_wait(&tx0).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = first.await.unwrap();
    assert_eq!(s, 200, "first waiter was cut short: {v}");
    assert_eq!(v["status"], "committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_parameters_use_the_error_format() {
    let t = TestNode::start().await;
    for path in [
        "/api/v1/events?from_height=abc",
        "/api/v1/blocks?limit=-1",
        "/api/v1/state/notary/x?height=tip",
    ] {
        let (s, v) = t.get(path).await;
        assert_error(s, &v, 400, "malformed");
    }
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_is_counted_in_metrics() {
    let t = TestNode::start().await;
    let alice = t.key("alice");
    let args = json!({"key": "big", "hash": doc_hash("big"), "note": "x".repeat(100_000)});
    let big = t.tx_with(&alice, 0, now_ms() + 60_000, "notary", "anchor", args);
    let (s, v) = t.submit_raw(body(&big)).await;
    assert_error(s, &v, 413, "oversized");
    let (s, v) = t.submit_raw(json!({"tx": "zz"})).await;
    assert_error(s, &v, 400, "malformed");
    let m = metrics_text(&t).await;
    assert_eq!(
        metric_value(
            &m,
            "trellis_transactions_rejected_total{code=\"oversized\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "trellis_transactions_rejected_total{code=\"malformed\"}"
        ),
        Some(1.0),
        "{m}"
    );
    t.shutdown().await;
}
