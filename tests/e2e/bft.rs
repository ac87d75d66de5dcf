//! A four-organisation BFT network of real `trellis node` processes (Malachite over loopback):
//! transactions submitted to any node commit everywhere; validators killed with SIGKILL at
//! random moments under load come back and catch up; with one of four down the chain keeps
//! committing, with two down it halts and resumes when one returns. Every run ends with the
//! invariant check: one block hash per height on every node, every acknowledged transaction
//! committed exactly once, heights monotonic, proofs verifying against the genesis validators.
//!
//! Kill cycles: 20 by default, TRELLIS_BFT_CYCLES to run more (or fewer).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chain_core::crypto::{SigningKey, Suite};
use chain_core::genesis::Genesis;
use chain_core::keystore::Keystore;
use chain_core::node::now_ms;
use chain_core::proof::{ProofBundle, verify_bundle};
use chain_core::types::{Validator, ValidatorSet, build_tx};
use parking_lot::Mutex;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");
const PASS: &str = "bft-test-passphrase";
const NODES: usize = 4;

/// One heavy test at a time: each network test runs four or five node processes, and two such
/// networks (or one and a headless browser, see `web.rs`) on a two-core machine starve each
/// other's consensus timeouts.
pub(crate) static ONE_NETWORK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn trellis() -> Command {
    let mut c = Command::new(BIN);
    c.env("TRELLIS_PASSPHRASE", PASS)
        .env("TRELLIS_FAST_KDF", "1")
        .env("RUST_LOG", "warn,chain_core=info")
        .env_remove("DATABASE_URL");
    c
}

struct Net {
    dir: PathBuf,
    api: Vec<u16>,
    procs: Vec<Option<Child>>,
    /// Extra environment per node (e.g. a Byzantine test mode).
    env: HashMap<usize, (String, String)>,
    client: reqwest::Client,
}

impl Net {
    fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.api[i])
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}"))
    }

    fn start(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.node_dir(i).join("node.log"))
            .expect("log file");
        let mut cmd = trellis();
        if let Some((k, v)) = self.env.get(&i) {
            cmd.env(k, v);
        }
        let child = cmd
            .arg("--data-dir")
            .arg(self.node_dir(i))
            .arg("node")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn node");
        self.procs[i] = Some(child);
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    async fn height(&self, i: usize) -> Option<u64> {
        let r = self
            .client
            .get(format!("{}/api/v1/chain", self.url(i)))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        v["height"].as_u64()
    }

    /// Block `h` as node `i` serves it (header, commit, transactions).
    async fn block(&self, i: usize, h: u64) -> Value {
        self.client
            .get(format!("{}/api/v1/blocks/{h}", self.url(i)))
            .send()
            .await
            .expect("block")
            .json()
            .await
            .expect("json")
    }

    async fn block_hash(&self, i: usize, h: u64) -> Option<String> {
        let r = self
            .client
            .get(format!("{}/api/v1/blocks/{h}", self.url(i)))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        let v: Value = r.json().await.ok()?;
        v["hash"].as_str().map(str::to_string)
    }

    /// Wait until node `i` answers with a height of at least `h`.
    async fn wait_height(&self, i: usize, h: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(x) = self.height(i).await
                && x >= h
            {
                return x;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} did not reach height {h} within {within:?} (at {:?}); see {}",
                self.height(i).await,
                self.node_dir(i).join("node.log").display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn max_height(&self, live: &[usize]) -> u64 {
        let mut m = 0;
        for &i in live {
            m = m.max(self.height(i).await.unwrap_or(0));
        }
        m
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill9(i);
        }
        // On failure, show what each node saw (the temporary directory goes away).
        if std::thread::panicking() {
            for i in 0..self.procs.len() {
                let log =
                    std::fs::read_to_string(self.node_dir(i).join("node.log")).unwrap_or_default();
                let interesting: Vec<&str> = log
                    .lines()
                    .filter(|l| !l.contains("dialing") && !l.contains("publishing"))
                    .collect();
                let tail = &interesting[interesting.len().saturating_sub(30)..];
                eprintln!(
                    "---- node{i} log (last {} lines)\n{}",
                    tail.len(),
                    tail.join("\n")
                );
            }
        }
    }
}

async fn next_nonce(client: &reqwest::Client, url: &str, key: &SigningKey) -> Option<u64> {
    let v: Value = client
        .get(format!("{url}/api/v1/accounts/{}", key.public_key()))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(v["next_nonce"].as_u64().unwrap_or(0))
}

/// Submits anchors signed by `key` to node `url`, pausing while that node is down; records
/// the ids of acknowledged transactions.
async fn load(
    client: reqwest::Client,
    url: String,
    chain_id: String,
    key: Arc<SigningKey>,
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) {
    let mut nonce: Option<u64> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let n = match nonce {
            Some(n) => n,
            None => match next_nonce(&client, &url, &key).await {
                Some(n) => n,
                None => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        i += 1;
        let doc = format!("bft-{}-{n}-{i}", &key.public_key().to_text()[8..16]);
        let hash = chain_core::crypto::HashAlg::Sha256
            .digest(doc.as_bytes())
            .to_hex();
        let tx = build_tx(
            Suite::Ed25519Sha256,
            &chain_id,
            &key,
            n,
            now_ms() + 600_000,
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
                nonce = Some(n + 1);
            }
            Ok(r) if r.status().as_u16() == 503 => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Ok(r) => {
                let body = r.text().await.unwrap_or_default();
                // A node restarted after a crash may know a different pending nonce: re-read it.
                assert!(
                    body.contains("nonce") || body.contains("duplicate"),
                    "unexpected rejection: {body}"
                );
                nonce = None;
            }
            Err(_) => {
                nonce = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn observer_public_key(dir: &Path, i: usize) -> String {
    let ks = Keystore::open(dir.join(format!("node{i}")).join("keystore")).expect("keystore");
    ks.load("validator", PASS)
        .expect("observer key")
        .public_key()
        .to_text()
}

fn genesis_set(dir: &Path) -> ValidatorSet {
    let g: Genesis = serde_json::from_slice(
        &std::fs::read(dir.join("node0").join("genesis.json")).expect("genesis"),
    )
    .expect("genesis json");
    ValidatorSet::new(
        g.validators
            .iter()
            .map(|v| Validator {
                public_key: v.public_key.clone(),
                power: v.power,
            })
            .collect(),
    )
    .expect("validator set")
}

/// Lay out a testnet of `validators` + `observers` nodes on free loopback ports (not started).
fn create_net(tmp: &Path, validators: usize, observers: usize) -> Net {
    let dir = tmp.join("net");
    let total = validators + observers;
    let ports = crate::common::free_ports(2 * total);
    let api: Vec<u16> = ports[..total].to_vec();
    let p2p: Vec<u16> = ports[total..].to_vec();
    let out = trellis()
        .args(["testnet", "--init-only", "--nodes"])
        .arg(validators.to_string())
        .arg("--observers")
        .arg(observers.to_string())
        .arg("--dir")
        .arg(&dir)
        .output()
        .expect("testnet init");
    assert!(
        out.status.success(),
        "testnet init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The testnet command lays out consecutive ports; use the free ones chosen here instead.
    for i in 0..total {
        let path = dir.join(format!("node{i}")).join("trellis.toml");
        let mut cfg: toml::Table =
            toml::from_str(&std::fs::read_to_string(&path).expect("cfg")).expect("toml");
        let others = |ports: &[u16], upto: usize, fmt: &dyn Fn(u16) -> String| -> toml::Value {
            toml::Value::Array(
                (0..upto)
                    .filter(|j| *j != i)
                    .map(|j| toml::Value::String(fmt(ports[j])))
                    .collect(),
            )
        };
        cfg.insert("listen".into(), format!("127.0.0.1:{}", api[i]).into());
        cfg.insert(
            "p2p_listen".into(),
            format!("/ip4/127.0.0.1/tcp/{}", p2p[i]).into(),
        );
        cfg.insert(
            "p2p_peers".into(),
            others(&p2p, total, &|p| format!("/ip4/127.0.0.1/tcp/{p}")),
        );
        cfg.insert(
            "peer_apis".into(),
            others(&api, validators, &|p| format!("http://127.0.0.1:{p}")),
        );
        // Short timeouts keep rounds with a dead or faulty proposer brief.
        cfg.insert("timeout_propose_ms".into(), toml::Value::Integer(1500));
        cfg.insert("empty_block_interval_ms".into(), toml::Value::Integer(500));
        std::fs::write(&path, toml::to_string(&cfg).expect("toml")).expect("write cfg");
    }
    Net {
        dir,
        api,
        procs: (0..total).map(|_| None).collect(),
        env: HashMap::new(),
        client: reqwest::Client::new(),
    }
}

/// Every node in `nodes` has the same block hash as node 0 at every height up to `top`.
async fn assert_no_fork(net: &Net, nodes: &[usize], top: u64) {
    for h in 1..=top {
        let reference = net.block_hash(0, h).await.expect("block on node 0");
        for &i in nodes {
            assert_eq!(
                net.block_hash(i, h).await.as_deref(),
                Some(reference.as_str()),
                "fork: node {i} differs from node 0 at height {h}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_survive_crashes_and_halt_safely_without_quorum() {
    let _one = ONE_NETWORK.lock().await;
    let cycles: usize = std::env::var("TRELLIS_BFT_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let tmp = tempfile::tempdir().expect("tempdir");
    // Four validators and one observer (a regulator's node), which joins late.
    let mut net = create_net(tmp.path(), NODES, 1);
    let observer = NODES;
    let dir = net.dir.clone();
    for i in 0..NODES {
        net.start(i);
    }
    for i in 0..NODES {
        net.wait_height(i, 2, Duration::from_secs(90)).await;
    }
    let chain_id = "trellis-testnet".to_string();

    // A transaction submitted to node 2 commits and is visible, in the same block, everywhere.
    let ks2 = Keystore::open(dir.join("node2").join("keystore")).expect("keystore");
    let k2 = ks2.load("freshmart-admin", PASS).expect("key");
    let tx = build_tx(
        Suite::Ed25519Sha256,
        &chain_id,
        &k2,
        0,
        now_ms() + 60_000,
        "notary",
        "anchor",
        serde_json::to_vec(&json!({"key": "first", "hash": "00".repeat(32)})).expect("json"),
    );
    let r: Value = net
        .client
        .post(format!("{}/api/v1/txs", net.url(2)))
        .json(&json!({"tx": hex::encode(tx.bytes()), "wait": "commit"}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    assert_eq!(r["status"], "committed", "{r}");
    let first_height = r["height"].as_u64().expect("height");
    for i in 0..NODES {
        net.wait_height(i, first_height, Duration::from_secs(30))
            .await;
    }
    let b = net.block(0, first_height).await;
    let signers = b["commit"]["signatures"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0);
    assert!(
        signers >= 3,
        "a 4-validator commit needs ≥ 3 precommits: {b}"
    );
    // The proof bundle from another node verifies against the genesis validator set.
    let proof: ProofBundle = net
        .client
        .get(format!(
            "{}/api/v1/txs/{}/proof",
            net.url(3),
            tx.id().to_hex()
        ))
        .send()
        .await
        .expect("proof")
        .json()
        .await
        .expect("bundle");
    verify_bundle(&proof, &genesis_set(&dir)).expect("proof verifies against genesis");

    // Load: one key per node.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let labels = [
        "acme-admin",
        "swiftcold-admin",
        "freshmart-admin",
        "samr-admin",
    ];
    let mut loaders = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        let ks = Keystore::open(dir.join(format!("node{i}")).join("keystore")).expect("ks");
        let key = Arc::new(ks.load(label, PASS).expect("key"));
        loaders.push(tokio::spawn(load(
            net.client.clone(),
            net.url(i),
            chain_id.clone(),
            key,
            acked.clone(),
            stop.clone(),
        )));
    }

    // Heights seen per node never go down.
    let mut last_seen: HashMap<usize, u64> = HashMap::new();
    let mut rng_state = now_ms() | 1;
    let mut rand = move |n: u64| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state % n
    };
    for cycle in 0..cycles {
        let victim = rand(NODES as u64) as usize;
        tokio::time::sleep(Duration::from_millis(200 + rand(1500))).await;
        net.kill9(victim);
        let live: Vec<usize> = (0..NODES).filter(|i| *i != victim).collect();
        // One of four down: the others keep committing.
        let before = net.max_height(&live).await;
        for &i in &live {
            net.wait_height(i, before + 2, Duration::from_secs(60))
                .await;
        }
        net.start(victim);
        let target = net.max_height(&live).await;
        net.wait_height(victim, target, Duration::from_secs(90))
            .await;
        for i in 0..NODES {
            if let Some(h) = net.height(i).await {
                let prev = last_seen.insert(i, h).unwrap_or(0);
                assert!(h >= prev, "node {i} went back from height {prev} to {h}");
            }
        }
        eprintln!("bft cycle {cycle}: killed node {victim}; all nodes at ≥ {target}");
    }

    // A validator that dies the instant a height is decided — its certificate on disk, the
    // block not yet in its database — commits that block when it restarts, then catches up.
    let victim = 1;
    net.kill9(victim);
    net.env.insert(
        victim,
        ("TRELLIS_TEST_CRASH".into(), "after-decision".into()),
    );
    net.start(victim);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let exited = net.procs[victim]
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some());
        if exited {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node started to crash at a decision did not"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    net.procs[victim] = None;
    net.env.remove(&victim);
    net.start(victim);
    let live: Vec<usize> = (0..NODES).filter(|i| *i != victim).collect();
    let target = net.max_height(&live).await;
    net.wait_height(victim, target, Duration::from_secs(90))
        .await;
    let log = std::fs::read_to_string(net.node_dir(victim).join("node.log")).unwrap_or_default();
    assert!(
        log.contains("committing a block decided before the restart"),
        "the restarted node did not commit the block it had decided"
    );

    // A new node joining late catches up from its peers and verifies every block.
    net.start(observer);
    let target = net.max_height(&[0, 1, 2, 3]).await;
    net.wait_height(observer, target, Duration::from_secs(120))
        .await;

    // Two of four down: no quorum, no blocks. One back: the chain resumes.
    net.kill9(2);
    net.kill9(3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled = net.max_height(&[0, 1]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        net.max_height(&[0, 1]).await,
        stalled,
        "two validators of four must not commit blocks"
    );
    net.start(2);
    // The two that stayed up may be between engine restarts (they saw no progress): allow for
    // their back-off.
    for i in [0, 1, 2] {
        net.wait_height(i, stalled + 2, Duration::from_secs(150))
            .await;
    }
    net.start(3);

    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        let _ = l.await;
    }
    // Let every acknowledged transaction commit, then compare the nodes block by block.
    let acked: Vec<String> = acked.lock().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut committed_at: HashMap<String, u64> = HashMap::new();
    for id in &acked {
        loop {
            let v: Option<Value> = match net
                .client
                .get(format!("{}/api/v1/txs/{id}", net.url(0)))
                .send()
                .await
            {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            if let Some(v) = v
                && v["status"] == "committed"
            {
                committed_at.insert(id.clone(), v["height"].as_u64().unwrap_or(0));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "acknowledged transaction {id} was never committed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let top = net.max_height(&[0]).await;
    for i in 0..NODES {
        net.wait_height(i, top, Duration::from_secs(90)).await;
    }
    net.wait_height(observer, top, Duration::from_secs(90))
        .await;
    assert_no_fork(&net, &[1, 2, 3, observer], top).await;
    let mut seen_txs: HashSet<String> = HashSet::new();
    for h in 1..=top {
        let b = net.block(0, h).await;
        if let Some(txs) = b["txs"].as_array() {
            for t in txs {
                if let Some(id) = t["id"].as_str() {
                    assert!(seen_txs.insert(id.to_string()), "tx {id} applied twice");
                }
            }
        }
        // The observer never votes: its key signs no certificate.
        let observer_key = observer_public_key(&dir, observer);
        let signers: Vec<&str> = b["commit"]["signatures"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["validator"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            !signers.contains(&observer_key.as_str()),
            "observer signed block {h}"
        );
    }
    for (id, h) in &committed_at {
        assert!(*h <= top && *h >= 1, "tx {id} at impossible height {h}");
    }
    eprintln!(
        "bft: {} acknowledged transactions committed, {} blocks identical on {NODES} nodes",
        acked.len(),
        top
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byzantine_proposer_is_refused_and_recorded_as_evidence() {
    let _one = ONE_NETWORK.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut net = create_net(tmp.path(), NODES, 0);
    // Node 3 runs as a faulty proposer: every block it proposes has a wrong state root.
    net.env.insert(
        3,
        ("TRELLIS_TEST_BYZANTINE".into(), "invalid-proposal".into()),
    );
    for i in 0..NODES {
        net.start(i);
    }
    net.wait_height(0, 1, Duration::from_secs(90)).await;
    // Garbage on the peer-to-peer port (not even a transport handshake) is dropped; the node
    // keeps running (it must reach the heights below).
    let cfg: toml::Table = toml::from_str(
        &std::fs::read_to_string(net.node_dir(0).join("trellis.toml")).expect("cfg"),
    )
    .expect("toml");
    let p2p_port: u16 = cfg["p2p_listen"]
        .as_str()
        .and_then(|a| a.rsplit('/').next())
        .and_then(|p| p.parse().ok())
        .expect("p2p port");
    for k in 0..20u8 {
        if let Ok(mut c) = tokio::net::TcpStream::connect(("127.0.0.1", p2p_port)).await {
            use tokio::io::AsyncWriteExt;
            let junk: Vec<u8> = (0..512u32)
                .map(|i| (i as u8).wrapping_mul(31) ^ k)
                .collect();
            let _ = c.write_all(&junk).await;
        }
    }
    // Enough heights that node 3 was the proposer of several rounds.
    for i in 0..NODES {
        net.wait_height(i, 12, Duration::from_secs(120)).await;
    }
    let top = net.max_height(&[0]).await;
    for i in 1..NODES {
        net.wait_height(i, top, Duration::from_secs(60)).await;
    }
    assert_no_fork(&net, &[1, 2, 3], top).await;
    let byzantine = observer_public_key(&net.dir, 3);
    // No committed block was proposed by the faulty validator.
    for h in 1..=top {
        let b = net.block(0, h).await;
        assert_ne!(
            b["proposer"].as_str(),
            Some(byzantine.as_str()),
            "block {h} proposed by the Byzantine validator was committed: {b}"
        );
    }
    // Honest nodes recorded its invalid proposals as evidence.
    let mut recorded = 0;
    for i in 0..3 {
        let path = net.node_dir(i).join("consensus").join("evidence.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("evidence json");
            assert_eq!(v["kind"], "invalid_proposal");
            assert_eq!(v["validator"].as_str(), Some(byzantine.as_str()), "{v}");
            recorded += 1;
        }
    }
    assert!(
        recorded > 0,
        "no evidence recorded against the Byzantine proposer"
    );
}

/// Loopback proxies for every directed link between nodes, so a test can cut a node off the
/// network (existing connections are dropped, new ones refused) and heal it again.
struct Links {
    isolated: Arc<Mutex<HashSet<usize>>>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl Links {
    /// Start a proxy for each link i → j; returns the proxies' ports as `ports[i][j]`.
    async fn start(nodes: usize, targets: &[u16]) -> (Self, Vec<Vec<u16>>) {
        let isolated: Arc<Mutex<HashSet<usize>>> = Arc::new(Mutex::new(HashSet::new()));
        let (generation, gen_rx) = tokio::sync::watch::channel(0u64);
        let mut ports = vec![vec![0u16; nodes]; nodes];
        for (i, row) in ports.iter_mut().enumerate() {
            for (j, port) in row.iter_mut().enumerate() {
                if i == j {
                    continue;
                }
                let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind proxy");
                *port = l.local_addr().expect("addr").port();
                let target = targets[j];
                let isolated = isolated.clone();
                let gen_rx = gen_rx.clone();
                tokio::spawn(async move {
                    loop {
                        let Ok((inbound, _)) = l.accept().await else {
                            return;
                        };
                        let cut = move |s: &HashSet<usize>| s.contains(&i) || s.contains(&j);
                        if cut(&isolated.lock()) {
                            continue; // refused: dropped at once
                        }
                        let isolated = isolated.clone();
                        let mut gen_rx = gen_rx.clone();
                        tokio::spawn(async move {
                            let Ok(outbound) =
                                tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                            else {
                                return;
                            };
                            let (mut ri, mut wi) = inbound.into_split();
                            let (mut ro, mut wo) = outbound.into_split();
                            let copy = async {
                                tokio::select! {
                                    _ = tokio::io::copy(&mut ri, &mut wo) => {}
                                    _ = tokio::io::copy(&mut ro, &mut wi) => {}
                                }
                            };
                            let watch_cut = async {
                                loop {
                                    if gen_rx.changed().await.is_err() {
                                        return;
                                    }
                                    if cut(&isolated.lock()) {
                                        return;
                                    }
                                }
                            };
                            tokio::select! {
                                _ = copy => {}
                                _ = watch_cut => {}
                            }
                        });
                    }
                });
            }
        }
        (
            Self {
                isolated,
                generation,
            },
            ports,
        )
    }

    fn isolate(&self, nodes: &[usize]) {
        self.isolated.lock().extend(nodes.iter().copied());
        self.generation.send_modify(|g| *g += 1);
    }

    fn heal(&self) {
        self.isolated.lock().clear();
        self.generation.send_modify(|g| *g += 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_heal_and_the_chain_converges() {
    let _one = ONE_NETWORK.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut net = create_net(tmp.path(), NODES, 0);
    // Route every peer-to-peer link through a proxy the test controls.
    let mut real = Vec::new();
    for i in 0..NODES {
        let path = net.node_dir(i).join("trellis.toml");
        let cfg: toml::Table =
            toml::from_str(&std::fs::read_to_string(&path).expect("cfg")).expect("toml");
        let listen = cfg["p2p_listen"].as_str().expect("p2p_listen").to_string();
        let port: u16 = listen
            .rsplit('/')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        real.push(port);
    }
    let (links, proxy) = Links::start(NODES, &real).await;
    for (i, links_from) in proxy.iter().enumerate() {
        let path = net.node_dir(i).join("trellis.toml");
        let mut cfg: toml::Table =
            toml::from_str(&std::fs::read_to_string(&path).expect("cfg")).expect("toml");
        cfg.insert(
            "p2p_peers".into(),
            toml::Value::Array(
                links_from
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, port)| toml::Value::String(format!("/ip4/127.0.0.1/tcp/{port}")))
                    .collect(),
            ),
        );
        std::fs::write(&path, toml::to_string(&cfg).expect("toml")).expect("write cfg");
    }
    for i in 0..NODES {
        net.start(i);
    }
    for i in 0..NODES {
        net.wait_height(i, 3, Duration::from_secs(90)).await;
    }

    // Node 3 cut off: the other three keep committing; node 3 cannot.
    links.isolate(&[3]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let h3 = net.height(3).await.expect("node 3 answers");
    let majority = net.max_height(&[0, 1, 2]).await;
    for i in 0..3 {
        net.wait_height(i, majority + 3, Duration::from_secs(60))
            .await;
    }
    assert!(
        net.height(3).await.expect("node 3 answers") <= h3 + 1,
        "an isolated validator must not commit on its own"
    );
    // Healed: node 3 catches up.
    links.heal();
    let target = net.max_height(&[0, 1, 2]).await;
    net.wait_height(3, target, Duration::from_secs(120)).await;

    // Two and two: no side has a quorum, nobody commits; healed, the chain resumes.
    links.isolate(&[2, 3]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled = net.max_height(&[0, 1, 2, 3]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        net.max_height(&[0, 1, 2, 3]).await <= stalled + 1,
        "a 2/2 split must not commit"
    );
    links.heal();
    let resumed = net.max_height(&[0, 1, 2, 3]).await;
    for i in 0..NODES {
        net.wait_height(i, resumed + 2, Duration::from_secs(120))
            .await;
    }
    let top = net.max_height(&[0]).await;
    for i in 1..NODES {
        net.wait_height(i, top, Duration::from_secs(60)).await;
    }
    assert_no_fork(&net, &[1, 2, 3], top).await;
}

/// Submit a transaction and wait until it is committed; returns the response.
async fn submit_commit(
    client: &reqwest::Client,
    url: &str,
    tx: &chain_core::types::SignedTx,
) -> Value {
    client
        .post(format!("{url}/api/v1/txs"))
        .json(&json!({"tx": hex::encode(tx.bytes()), "wait": "commit"}))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_changes_the_validator_set_of_a_running_network() {
    let _one = ONE_NETWORK.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut net = create_net(tmp.path(), NODES, 0);
    for i in 0..NODES {
        net.start(i);
    }
    for i in 0..NODES {
        net.wait_height(i, 2, Duration::from_secs(90)).await;
    }
    let chain_id = "trellis-testnet";
    let dir = net.dir.clone();
    let admin = |i: usize, label: &str| {
        Keystore::open(dir.join(format!("node{i}")).join("keystore"))
            .expect("keystore")
            .load(label, PASS)
            .expect("admin key")
    };
    let validator_key = |i: usize| observer_public_key(&dir, i);
    // The consortium removes node 3's validator: proposed by acme, approved by two more.
    let remaining: Vec<Value> = (0..3)
        .map(|i| json!({"public_key": validator_key(i), "power": 1}))
        .collect();
    let call = |key: &SigningKey, method: &str, args: Value| {
        build_tx(
            Suite::Ed25519Sha256,
            chain_id,
            key,
            0,
            now_ms() + 120_000,
            "system",
            method,
            serde_json::to_vec(&args).expect("json"),
        )
    };
    let r = submit_commit(
        &net.client,
        &net.url(0),
        &call(
            &admin(0, "acme-admin"),
            "propose",
            json!({"action": {"type": "set_validators", "validators": remaining}}),
        ),
    )
    .await;
    assert_eq!(r["status"], "committed", "{r}");
    assert_eq!(r["receipt"]["status"], "ok", "{r}");
    for (i, label) in [(1, "swiftcold-admin"), (2, "freshmart-admin")] {
        let r = submit_commit(
            &net.client,
            &net.url(i),
            &call(
                &admin(i, label),
                "vote",
                json!({"proposal_id": 1, "approve": true}),
            ),
        )
        .await;
        assert_eq!(r["receipt"]["status"], "ok", "{r}");
    }
    // Wait until the new set is in force.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = net
            .client
            .get(format!("{}/api/v1/chain", net.url(0)))
            .send()
            .await
            .expect("chain")
            .json()
            .await
            .expect("json");
        if v["validators"].as_array().map(|a| a.len()) == Some(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "validator change never took effect: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Node 3 is no longer needed: stop it; the three remaining validators keep committing.
    net.kill9(3);
    let h = net.max_height(&[0, 1, 2]).await;
    for i in 0..3 {
        net.wait_height(i, h + 4, Duration::from_secs(60)).await;
    }
    let top = net.max_height(&[0]).await;
    for i in 1..3 {
        net.wait_height(i, top, Duration::from_secs(60)).await;
    }
    assert_no_fork(&net, &[1, 2], top).await;
    let removed = validator_key(3);
    let b = net.block(1, top).await;
    let signers: Vec<&str> = b["commit"]["signatures"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["validator"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(signers.len(), 3, "all three remaining validators sign: {b}");
    assert!(!signers.contains(&removed.as_str()), "{b}");
}
