//! `trellis testnet`: a local multi-organisation network for development. Creates (once) a
//! genesis naming N validators, one data directory per organisation's node with its own
//! keystore and config, then runs one `trellis node` process per node until interrupted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chain_core::crypto::{SigningKey, Suite};
use chain_core::genesis::{self, GenesisValidator};
use chain_core::keystore::Keystore;
use clap::Args;

use crate::config::{self, Config, ConsensusKind};

#[derive(Args, Debug, Clone)]
pub struct TestnetArgs {
    /// Number of validator nodes (one per organisation).
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Observer nodes (a regulator's or auditor's read-only node): they follow and verify the
    /// chain and serve the API, but never vote.
    #[arg(long, default_value_t = 0)]
    observers: usize,
    /// Directory holding one sub-directory per node (created on first run, reused after).
    #[arg(long, default_value = "testnet")]
    dir: PathBuf,
    /// API port of node 0; node i listens on base + i.
    #[arg(long, default_value_t = 8080)]
    api_port: u16,
    /// Peer-to-peer port of node 0; node i listens on base + i.
    #[arg(long, default_value_t = 27000)]
    p2p_port: u16,
    #[arg(long, default_value = "trellis-testnet")]
    chain_id: String,
    #[arg(long, default_value = "ed25519-sha256")]
    suite: Suite,
    /// Only create the directories and configs; do not start the nodes.
    #[arg(long)]
    init_only: bool,
}

const ORGS: [(&str, &str); 4] = [
    ("acme", "Acme Dairy Co."),
    ("swiftcold", "SwiftCold Logistics"),
    ("freshmart", "FreshMart Retail"),
    ("samr", "Market Regulator"),
];

fn org_id(i: usize) -> String {
    match ORGS.get(i) {
        Some((id, _)) => id.to_string(),
        None => format!("org{}", i + 1),
    }
}

pub fn node_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("node{i}"))
}

/// Create genesis, keys and configs for `nodes` validators (skipped when they exist).
pub fn init(a: &TestnetArgs) -> anyhow::Result<()> {
    if a.nodes == 0 || a.nodes > 64 {
        bail!("--nodes must be between 1 and 64");
    }
    if node_dir(&a.dir, 0).join("genesis.json").exists() {
        let existing = (0..).take_while(|i| node_dir(&a.dir, *i).exists()).count();
        if existing != a.nodes + a.observers {
            bail!(
                "{} holds a {existing}-node testnet; remove it or pass matching --nodes and --observers",
                a.dir.display()
            );
        }
        return Ok(());
    }
    let alg = a.suite.sig();
    let validators: Vec<SigningKey> = (0..a.nodes).map(|_| SigningKey::generate(alg)).collect();
    let admins: Vec<(String, String, SigningKey)> = (0..a.nodes.max(ORGS.len()))
        .map(|i| (org_id(i), "admin".to_string(), SigningKey::generate(alg)))
        .collect();
    let demo_keys = genesis::DemoKeys {
        gateway: None,
        validator: ("unused".into(), SigningKey::generate(alg)),
        admins: Vec::new(),
    };
    let mut g = genesis::demo(&a.chain_id, a.suite, chain_core::node::now_ms(), &demo_keys);
    g.validators = validators
        .iter()
        .enumerate()
        .map(|(i, k)| GenesisValidator {
            name: format!("{}-validator", org_id(i)),
            public_key: k.public_key(),
            power: 1,
            address: Some(p2p_addr(a.p2p_port, i)),
        })
        .collect();
    g.organisations = (0..a.nodes.max(ORGS.len()))
        .map(|i| chain_core::system::GenesisOrg {
            id: org_id(i),
            name: ORGS
                .get(i)
                .map(|(_, n)| n.to_string())
                .unwrap_or_else(|| format!("Organisation {}", i + 1)),
            admins: vec![chain_core::system::NewAdmin {
                name: "admin".into(),
                public_key: admins[i].2.public_key(),
            }],
            members: Vec::new(),
        })
        .collect();
    g.validate()?;
    let pass = config::passphrase();
    let total = a.nodes + a.observers;
    // Observers carry a key of their own that is not in the validator set.
    let node_keys: Vec<&SigningKey> = validators.iter().collect();
    let observer_keys: Vec<SigningKey> = (0..a.observers)
        .map(|_| SigningKey::generate(alg))
        .collect();
    let all_keys: Vec<&SigningKey> = node_keys.into_iter().chain(observer_keys.iter()).collect();
    for (i, vkey) in all_keys.into_iter().enumerate() {
        let dir = node_dir(&a.dir, i);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let cfg = Config {
            data_dir: PathBuf::new(),
            listen: format!("127.0.0.1:{}", u32::from(a.api_port) + i as u32),
            consensus: ConsensusKind::Bft,
            // Every validator re-executes each block within the round's timeouts: keep blocks
            // moderate when all nodes share one machine.
            max_block_txs: 5_000,
            p2p_listen: p2p_addr(a.p2p_port, i),
            p2p_peers: (0..total)
                .filter(|j| *j != i)
                .map(|j| p2p_addr(a.p2p_port, j))
                .collect(),
            peer_apis: (0..a.nodes)
                .filter(|j| *j != i)
                .map(|j| format!("http://127.0.0.1:{}", u32::from(a.api_port) + j as u32))
                .collect(),
            ..Config::default()
        };
        let ks = Keystore::open(dir.join("keystore"))?.with_kdf(crate::kdf_params());
        ks.save(&cfg.validator_key, vkey, &pass)?;
        // Each organisation's node holds its own admin key; node 0 also holds the admin keys
        // of organisations without a node.
        for (j, (org, name, key)) in admins.iter().enumerate() {
            if j == i || (i == 0 && j >= a.nodes) {
                ks.save(&format!("{org}-{name}"), key, &pass)?;
            }
        }
        std::fs::write(dir.join("genesis.json"), serde_json::to_vec_pretty(&g)?)?;
        std::fs::write(dir.join("trellis.toml"), toml::to_string_pretty(&cfg)?)?;
    }
    eprintln!(
        "created a {}-validator testnet `{}` with {} observers in {}",
        a.nodes,
        a.chain_id,
        a.observers,
        a.dir.display()
    );
    Ok(())
}

fn p2p_addr(base: u16, i: usize) -> String {
    format!("/ip4/127.0.0.1/tcp/{}", u32::from(base) + i as u32)
}

/// Run every node as a child process until Ctrl-C or SIGTERM, then stop them gracefully.
pub async fn run(a: TestnetArgs) -> anyhow::Result<()> {
    init(&a)?;
    if a.init_only {
        return Ok(());
    }
    let exe = std::env::current_exe().context("locating the trellis binary")?;
    let mut children = Vec::with_capacity(a.nodes + a.observers);
    for i in 0..a.nodes + a.observers {
        let dir = node_dir(&a.dir, i);
        let log = std::fs::File::create(dir.join("node.log"))?;
        let child = tokio::process::Command::new(&exe)
            .arg("--data-dir")
            .arg(&dir)
            .arg("node")
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting node {i}"))?;
        eprintln!(
            "node{i}: http://127.0.0.1:{} (log {})",
            u32::from(a.api_port) + i as u32,
            dir.join("node.log").display()
        );
        children.push(child);
    }
    crate::shutdown_signal().await;
    eprintln!("stopping {} nodes", children.len());
    for c in &children {
        if let Some(pid) = c.id() {
            // SIGTERM lets each node finish its block and close its database.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }
    for mut c in children {
        if tokio::time::timeout(Duration::from_secs(15), c.wait())
            .await
            .is_err()
        {
            let _ = c.kill().await;
        }
    }
    Ok(())
}
