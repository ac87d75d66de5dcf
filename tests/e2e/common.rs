//! Shared harness: a real node (real database, real HTTP server on a free port) per test.
//!
//! Database: SQLite in a temporary directory by default. With `TRELLIS_TEST_DATABASE_URL`
//! pointing at a PostgreSQL server (e.g. `postgres://postgres@127.0.0.1:5432/test`), each test
//! gets a fresh database created on that server instead.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chain_core::consensus::{ConsensusEngine, SoloConfig, SoloEngine};
use chain_core::crypto::{SigAlg, SigningKey, Suite};
use chain_core::genesis::{Genesis, GenesisValidator};
use chain_core::node::{Node, NodeConfig, now_ms};
use chain_core::storage::Store;
use chain_core::system::{GenesisMember, GenesisOrg, GovernanceParams, NewAdmin};
use chain_core::types::{SignedTx, build_tx};
use serde_json::Value;

pub const ORGS: [&str; 4] = ["acme", "swiftcold", "freshmart", "samr"];

pub fn key(suite: Suite, label: &str) -> SigningKey {
    SigningKey::from_label(suite.sig(), label)
}

/// Genesis of a four-organisation consortium with deterministic keys: `<org>-admin` for each
/// organisation, plus member `acme/alice` (key `alice`) and the validator (`validator`).
pub fn test_genesis(suite: Suite, chain_id: &str) -> Genesis {
    Genesis {
        chain_id: chain_id.into(),
        suite,
        genesis_time_ms: now_ms(),
        validators: vec![GenesisValidator {
            name: "validator".into(),
            public_key: key(suite, "validator").public_key(),
            power: 1,
            address: None,
        }],
        organisations: ORGS
            .iter()
            .map(|o| GenesisOrg {
                id: o.to_string(),
                name: format!("{o} Ltd"),
                admins: vec![NewAdmin {
                    name: "admin".into(),
                    public_key: key(suite, &format!("{o}-admin")).public_key(),
                }],
                members: if *o == "acme" {
                    vec![GenesisMember {
                        name: "alice".into(),
                        public_key: key(suite, "alice").public_key(),
                        roles: vec!["trace.operator".into()],
                    }]
                } else {
                    vec![]
                },
            })
            .collect(),
        governance: GovernanceParams::default(),
    }
}

/// Database URL for a new test database.
pub async fn fresh_database(dir: &std::path::Path) -> String {
    match std::env::var("TRELLIS_TEST_DATABASE_URL") {
        Ok(base) if base.starts_with("postgres") => {
            use sea_orm::ConnectionTrait;
            let name = format!("trellis_t_{}_{}", std::process::id(), rand_suffix());
            let admin = sea_orm::Database::connect(base.clone())
                .await
                .expect("TRELLIS_TEST_DATABASE_URL must be reachable");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            let (prefix, _) = base.rsplit_once('/').expect("database url has a path");
            format!("{prefix}/{name}")
        }
        _ => format!("sqlite://{}?mode=rwc", dir.join("chain.db").display()),
    }
}

pub fn rand_suffix() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("os rng");
    hex::encode(b)
}

pub struct TestNode {
    pub node: Arc<Node>,
    pub url: String,
    pub db_url: String,
    pub suite: Suite,
    pub chain_id: String,
    pub genesis: Genesis,
    pub client: reqwest::Client,
    stop: tokio::sync::watch::Sender<bool>,
    pub dir: tempfile::TempDir,
}

pub struct Options {
    pub suite: Suite,
    pub cfg: NodeConfig,
    pub empty_blocks: bool,
    /// Contract code the node carries (default: the core contracts).
    pub registry: Option<chain_core::contract::ContractRegistry>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            suite: Suite::Ed25519Sha256,
            cfg: NodeConfig::default(),
            empty_blocks: false,
            registry: None,
        }
    }
}

impl TestNode {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_url = fresh_database(dir.path()).await;
        let chain_id = format!("test-{}", rand_suffix());
        let genesis = test_genesis(opts.suite, &chain_id);
        let store = Store::open(&db_url).await.expect("open store");
        let registry = opts.registry.unwrap_or_else(chain_core::core_contracts);
        let node = Node::open(store, genesis.clone(), registry, opts.cfg)
            .await
            .expect("open node");
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let engine = SoloEngine::new(
            key(opts.suite, "validator"),
            SoloConfig {
                min_block_interval: Duration::from_millis(5),
                empty_block_interval: opts.empty_blocks.then(|| Duration::from_millis(300)),
            },
        );
        tokio::spawn(engine.run(node.clone(), stop_rx.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = chain_core::api::router(node.clone());
        let mut stop_http = stop_rx;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_http.changed().await;
                })
                .await;
        });
        Self {
            node,
            url: format!("http://{addr}"),
            db_url,
            suite: opts.suite,
            chain_id,
            genesis,
            client: reqwest::Client::new(),
            stop,
            dir,
        }
    }

    pub fn key(&self, label: &str) -> SigningKey {
        key(self.suite, label)
    }

    /// Build a transaction from `signer` with its next nonce (committed + pending).
    pub async fn tx(
        &self,
        signer: &SigningKey,
        contract: &str,
        method: &str,
        args: Value,
    ) -> SignedTx {
        let acc = self
            .get(&format!("/api/v1/accounts/{}", signer.public_key()))
            .await
            .1;
        let nonce = acc["next_nonce"].as_u64().unwrap_or(0);
        self.tx_with(signer, nonce, now_ms() + 60_000, contract, method, args)
    }

    pub fn tx_with(
        &self,
        signer: &SigningKey,
        nonce: u64,
        expiry: u64,
        contract: &str,
        method: &str,
        args: Value,
    ) -> SignedTx {
        build_tx(
            self.suite,
            &self.chain_id,
            signer,
            nonce,
            expiry,
            contract,
            method,
            serde_json::to_vec(&args).expect("json"),
        )
    }

    pub async fn submit_raw(&self, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/api/v1/txs", self.url))
            .json(&body)
            .send()
            .await
            .expect("http");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Submit and wait for the commit; returns (status, body).
    pub async fn submit_wait(&self, tx: &SignedTx) -> (u16, Value) {
        self.submit_raw(serde_json::json!({"tx": hex::encode(tx.bytes()), "wait": "commit"}))
            .await
    }

    /// Submit, wait for commit, and require an ok receipt.
    pub async fn call_ok(
        &self,
        signer: &SigningKey,
        contract: &str,
        method: &str,
        args: Value,
    ) -> Value {
        let v = self.call_full(signer, contract, method, args).await;
        assert_eq!(v["receipt"]["status"], "ok", "receipt not ok: {v}");
        v
    }

    /// Submit and wait for commit; returns the whole 200 response (tx id, height, receipt).
    async fn call_full(
        &self,
        signer: &SigningKey,
        contract: &str,
        method: &str,
        args: Value,
    ) -> Value {
        let tx = self.tx(signer, contract, method, args).await;
        let (s, v) = self.submit_wait(&tx).await;
        assert_eq!(s, 200, "submit failed: {v}");
        v
    }

    /// Submit, wait for commit, return the receipt (which may have failed).
    pub async fn call(
        &self,
        signer: &SigningKey,
        contract: &str,
        method: &str,
        args: Value,
    ) -> Value {
        self.call_full(signer, contract, method, args).await["receipt"].clone()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("http");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn state(&self, contract: &str, key: &str) -> Value {
        let k = url_key(key);
        self.get(&format!("/api/v1/state/{contract}/{k}")).await.1
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn alg(suite: Suite) -> SigAlg {
    suite.sig()
}

/// Percent-encode a state key for use as one path segment.
pub fn url_key(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Ports for servers that tests start (node processes, embedded brokers), distinct within this
/// test binary. They come from below the kernel's ephemeral range (32768–60999 on Linux): a port
/// picked by binding port 0 and then released can be handed out again, before the server binds
/// it, as the local port of any outgoing connection — another test's HTTP client — and the
/// server then fails to start. Ports below that range are only ever taken by an explicit bind;
/// each candidate is checked by binding it, so one a service already holds is skipped.
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const LAST: u32 = 32_000;
    // Apart per process, so that two test binaries running at once rarely meet.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = FIRST + (std::process::id() % 60) * 200;
    let mut ports = Vec::with_capacity(n);
    for _ in 0..(LAST - FIRST) {
        if ports.len() == n {
            break;
        }
        let port = (base - FIRST + NEXT.fetch_add(1, Ordering::Relaxed)) % (LAST - FIRST) + FIRST;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    assert_eq!(ports.len(), n, "no free ports left in {FIRST}..{LAST}");
    ports
}

/// One port, as [`free_ports`].
pub(crate) fn free_port() -> u16 {
    free_ports(1)[0]
}
