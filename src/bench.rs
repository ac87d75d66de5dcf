//! `trellis bench`: drives an in-process single-validator node on a fresh SQLite database with
//! signed `notary.anchor` transactions (each writes new state), in two phases:
//! 1. saturation: keep the pool full and measure committed transactions per second;
//! 2. latency: offer a fixed rate and measure submit→commit latency.
//!
//! The saturation phase's transactions are signed before the clock starts (clients sign on their
//! own machines) and read from a file during the run; `--sign-live` signs them on a generator
//! thread just ahead of submission instead, so the figures include the client's signing cost.
//! The last line is `committed_tx_per_s=N p99_commit_ms=M`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chain_core::consensus::{ConsensusEngine, SoloConfig, SoloEngine};
use chain_core::crypto::{SigAlg, SigningKey, Suite};
use chain_core::genesis::{Genesis, GenesisValidator};
use chain_core::node::{Node, NodeConfig, Submitted, now_ms};
use chain_core::storage::Store;
use chain_core::system::{GenesisMember, GenesisOrg, GovernanceParams, NewAdmin};
use chain_core::types::{SignedTx, build_tx};
use clap::Args;
use rayon::prelude::*;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Short run (under 60 s): 15 s saturation, 10 s latency, no 1M-transaction memory check.
    #[arg(long)]
    quick: bool,
    /// Seconds of the saturation phase (default 60; quick 15).
    #[arg(long)]
    duration: Option<u64>,
    /// Offered load of the latency phase, transactions per second (default 5,000; 2,000 with
    /// --validators).
    #[arg(long)]
    rate: Option<u64>,
    /// Seconds of the latency phase (default 20; quick 10).
    #[arg(long)]
    latency_duration: Option<u64>,
    /// Keep committing until this many transactions are in the chain before reading RSS
    /// (default 1,000,000; quick 0).
    #[arg(long)]
    total_txs: Option<u64>,
    /// Number of sending accounts.
    #[arg(long, default_value_t = 512)]
    accounts: usize,
    /// Sign the saturation phase's transactions during the run, on the cores the node uses
    /// (default: signed before the clock starts, as clients on other machines would).
    #[arg(long)]
    sign_live: bool,
    /// Database (default: a fresh SQLite file in a temporary directory).
    #[arg(long)]
    database_url: Option<String>,
    #[arg(long, default_value = "ed25519-sha256")]
    suite: Suite,
    /// Run this many BFT validators as separate processes (default: one in-process validator
    /// with the solo engine). The offered load of the latency phase defaults to 2,000 tx/s.
    #[arg(long)]
    validators: Option<usize>,
    /// Benchmark the explorer's web pages instead: block and transaction pages under
    /// concurrent clients, at the offered rate of --rate (default 2,000 requests/s) for
    /// --duration seconds (default 20; quick 10).
    #[arg(long)]
    web: bool,
    /// --web, --trace: concurrent HTTP clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Benchmark the traceability app instead: EPCIS capture throughput (100,000 events; quick
    /// 20,000), consumer pages at --rate (default 1,000 requests/s) for --duration seconds
    /// (default 20; quick 10) while capture keeps the chain busy, and trace-graph time.
    #[arg(long)]
    trace: bool,
    /// Benchmark the IoT gateway instead: signed readings published over MQTT at --rate
    /// (default 21,000/s) for --duration seconds (default 60; quick 15), verified, stored and
    /// anchored by a `trellis gateway` process.
    #[arg(long)]
    iot: bool,
    /// --iot: simulated sensors.
    #[arg(long, default_value_t = 1_000)]
    devices: usize,
}

/// One nonce for every account: `notary.anchor` transactions signed in parallel.
pub fn sign_round(
    suite: Suite,
    chain_id: &str,
    keys: &[SigningKey],
    label: &str,
    round: u64,
    expiry_ms: u64,
) -> Vec<SignedTx> {
    keys.par_iter()
        .enumerate()
        .map(|(i, k)| {
            let doc = format!("{label}-{i}-{round}");
            let hash = chain_core::crypto::HashAlg::Sha256
                .digest(doc.as_bytes())
                .to_hex();
            let args = format!(r#"{{"key":"{doc}","hash":"{hash}"}}"#).into_bytes();
            build_tx(
                suite, chain_id, k, round, expiry_ms, "notary", "anchor", args,
            )
        })
        .collect()
}

struct Generator {
    rx: std::sync::mpsc::Receiver<Vec<SignedTx>>,
    stop: Arc<AtomicBool>,
}

impl Generator {
    /// Signs rounds (one nonce for every account) from `first_round` on, on a background thread.
    fn start(suite: Suite, chain_id: String, keys: Arc<Vec<SigningKey>>, first_round: u64) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<SignedTx>>(16);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            let mut round = first_round;
            while !stop2.load(Ordering::Relaxed) {
                let chunk = sign_round(suite, &chain_id, &keys, "bench", round, now_ms() + 600_000);
                round += 1;
                if tx.send(chunk).is_err() {
                    return;
                }
            }
        });
        Self { rx, stop }
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Transactions signed before the clock starts, as a client fleet would send them: written to a
/// file (length-prefixed raw bytes) so that they occupy neither the node's cores during the run
/// nor the process memory the benchmark reports.
struct Presigned {
    path: std::path::PathBuf,
    rounds: u64,
}

impl Presigned {
    fn write(
        path: std::path::PathBuf,
        suite: Suite,
        chain_id: &str,
        keys: &[SigningKey],
        rounds: u64,
    ) -> anyhow::Result<Self> {
        use std::io::Write;
        let file = std::fs::File::create(&path).context("creating the pre-signed file")?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        // Half an hour: the longest run ends well before, and admission allows up to an hour.
        let expiry = now_ms() + 1_800_000;
        for round in 0..rounds {
            for tx in sign_round(suite, chain_id, keys, "bench", round, expiry) {
                let raw = tx.bytes();
                out.write_all(&(raw.len() as u32).to_le_bytes())?;
                out.write_all(raw)?;
            }
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        // On disk before the clock starts, so write-back does not compete with the node's own.
        file.sync_all()?;
        Ok(Self { path, rounds })
    }

    /// Sends every pre-signed transaction in order; false if the receiver went away.
    fn feed(&self, feed: &async_channel::Sender<Vec<u8>>) -> anyhow::Result<bool> {
        use std::io::Read;
        let file = std::fs::File::open(&self.path)?;
        let mut input = std::io::BufReader::with_capacity(1 << 20, file);
        let mut len = [0u8; 4];
        loop {
            match input.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(true),
                Err(e) => return Err(e.into()),
            }
            let mut raw = vec![0u8; u32::from_le_bytes(len) as usize];
            input.read_exact(&mut raw)?;
            if feed.send_blocking(raw).is_err() {
                return Ok(false);
            }
        }
    }
}

/// Transactions the saturation phase keeps waiting in the pool: three full blocks, so the node
/// never waits for work. (It was 60,000 with 20,000-transaction blocks; a deeper backlog adds
/// nothing but memory.)
const SATURATION_BACKLOG: usize = 30_000;

/// CPU time this process has used (user + system), seconds; 0 if unreadable.
pub fn cpu_seconds() -> f64 {
    // Fields 14 and 15 of /proc/self/stat, after the parenthesised command name, in clock
    // ticks (100 per second on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

fn rss_mb() -> f64 {
    proc_status_mb("self", "VmRSS:")
}

/// A memory figure (`VmRSS:`, `VmHWM:`…) of process `pid` (or `self`) in MiB; 0 if unreadable.
pub fn proc_status_mb(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The benchmark consortium: one organisation whose members are the sending accounts.
pub fn bench_org(admin: &SigningKey, keys: &[SigningKey]) -> GenesisOrg {
    GenesisOrg {
        id: "bench".into(),
        name: "Benchmark Org".into(),
        admins: vec![NewAdmin {
            name: "admin".into(),
            public_key: admin.public_key(),
        }],
        members: keys
            .iter()
            .enumerate()
            .map(|(i, k)| GenesisMember {
                name: format!("sender-{i}"),
                public_key: k.public_key(),
                roles: vec![],
            })
            .collect(),
    }
}

/// A fresh demo chain in a temporary directory with its solo validator running: what the app
/// benchmarks (`--trace`, `--iot`) stand on.
pub struct SoloBench {
    pub dir: tempfile::TempDir,
    pub cfg: crate::config::Config,
    pub node: Arc<chain_core::node::Node>,
    pub stop_tx: tokio::sync::watch::Sender<bool>,
    pub stop_rx: tokio::sync::watch::Receiver<bool>,
    pub engine_task: tokio::task::JoinHandle<Result<(), chain_core::node::NodeError>>,
}

impl SoloBench {
    pub async fn start(chain_name: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        let dir = tempfile::tempdir()?;
        let cfg = crate::config::Config {
            data_dir: dir.path().to_path_buf(),
            ..crate::config::Config::default()
        };
        crate::init(&cfg, chain_name, Suite::Ed25519Sha256, false)?;
        let node = crate::open_node(&cfg).await?;
        let validator = chain_core::keystore::Keystore::open(cfg.keystore_dir())?
            .load(&cfg.validator_key, &crate::config::passphrase())
            .context("validator key")?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let engine = SoloEngine::new(
            validator,
            SoloConfig {
                min_block_interval: Duration::from_millis(cfg.min_block_interval_ms),
                empty_block_interval: None,
            },
        );
        let engine_task = tokio::spawn(engine.run(node.clone(), stop_rx.clone()));
        Ok(Self {
            dir,
            cfg,
            node,
            stop_tx,
            stop_rx,
            engine_task,
        })
    }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub async fn run(a: BenchArgs) -> anyhow::Result<()> {
    if a.iot {
        return crate::bench_iot::run(crate::bench_iot::IotBenchArgs {
            quick: a.quick,
            rate: a.rate.unwrap_or(21_000),
            duration_s: a.duration.unwrap_or(if a.quick { 15 } else { 60 }),
            devices: a.devices.max(1),
        })
        .await;
    }
    if a.trace {
        return crate::bench_trace::run(crate::bench_trace::TraceBenchArgs {
            quick: a.quick,
            rate: a.rate.unwrap_or(1_000),
            duration_s: a.duration.unwrap_or(if a.quick { 10 } else { 20 }),
            clients: a.clients.max(1),
        })
        .await;
    }
    if a.web {
        return crate::bench_web::run(crate::bench_web::WebBenchArgs {
            rate: a.rate.unwrap_or(2_000),
            duration_s: a.duration.unwrap_or(if a.quick { 10 } else { 20 }),
            clients: a.clients.max(1),
            txs: if a.quick { 2_000 } else { 10_000 },
        })
        .await;
    }
    if let Some(n) = a.validators {
        return crate::bench_bft::run(crate::bench_bft::BftBenchArgs {
            validators: n,
            quick: a.quick,
            duration: a.duration,
            latency_duration: a.latency_duration,
            rate: a.rate.unwrap_or(2_000),
            accounts: a.accounts,
            suite: a.suite,
            sign_live: a.sign_live,
        })
        .await;
    }
    let rate = a.rate.unwrap_or(5_000);
    let saturate_s = a.duration.unwrap_or(if a.quick { 15 } else { 60 });
    let latency_s = a.latency_duration.unwrap_or(if a.quick { 10 } else { 20 });
    let total_target = a.total_txs.unwrap_or(if a.quick { 0 } else { 1_000_000 });
    let suite = a.suite;
    let alg: SigAlg = suite.sig();

    let dir = tempfile::tempdir()?;
    let url = a.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        )
    });
    eprintln!(
        "bench: preparing {} accounts on {}",
        a.accounts,
        if a.database_url.is_some() {
            "the given database"
        } else {
            "SQLite"
        }
    );
    let keys: Arc<Vec<SigningKey>> = Arc::new(
        (0..a.accounts)
            .into_par_iter()
            .map(|i| SigningKey::from_label(alg, &format!("bench-{i}")))
            .collect(),
    );
    let validator = SigningKey::from_label(alg, "bench-validator");
    let admin = SigningKey::from_label(alg, "bench-admin");
    let chain_id = format!("bench-{}", now_ms());
    let genesis = Genesis {
        chain_id: chain_id.clone(),
        suite,
        genesis_time_ms: now_ms(),
        validators: vec![GenesisValidator {
            name: "bench-validator".into(),
            public_key: validator.public_key(),
            power: 1,
            address: None,
        }],
        organisations: vec![crate::bench::bench_org(&admin, &keys)],
        governance: GovernanceParams::default(),
    };
    let store = Store::open(&url)
        .await
        .context("opening the bench database")?;
    let node = Node::open(
        store,
        genesis,
        chain_core::core_contracts(),
        NodeConfig::default(),
    )
    .await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let engine = SoloEngine::new(
        validator,
        SoloConfig {
            min_block_interval: Duration::from_millis(20),
            empty_block_interval: Some(Duration::from_secs(1)),
        },
    );
    let engine_task = tokio::spawn(engine.run(node.clone(), stop_rx));

    let committed = Arc::new(AtomicU64::new(0));
    {
        let committed = committed.clone();
        let mut sub = node.subscribe();
        tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(b) => {
                        committed.fetch_add(b.tx_count as u64, Ordering::Relaxed);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                }
            }
        });
    }

    // Enough pre-signed transactions for the whole saturation phase at well above the target
    // rate (and the 1M-transaction memory check); past them the live generator takes over.
    let presigned = if a.sign_live {
        None
    } else {
        // The pool's backlog and the feeding queue hold some beyond what commits.
        let wanted = total_target.max((saturate_s + 3) * 20_000) + 2 * SATURATION_BACKLOG as u64;
        let rounds = wanted.div_ceil(keys.len().max(1) as u64);
        eprintln!(
            "bench: signing {} transactions before the clock starts",
            rounds * keys.len() as u64
        );
        let signing = Instant::now();
        let path = dir.path().join("presigned.bin");
        let (suite2, chain2, keys2) = (suite, chain_id.clone(), keys.clone());
        let p = tokio::task::spawn_blocking(move || {
            Presigned::write(path, suite2, &chain2, &keys2, rounds)
        })
        .await??;
        eprintln!("bench: signed in {:.1} s", signing.elapsed().as_secs_f64());
        Some(p)
    };
    let (feed_tx, feed_rx) = async_channel::<Vec<u8>>(4096);
    let feeder = {
        let feed_tx = feed_tx.clone();
        let (chain_id, keys) = (chain_id.clone(), keys.clone());
        std::thread::spawn(move || {
            let first_live_round = match &presigned {
                Some(p) => match p.feed(&feed_tx) {
                    Ok(true) => p.rounds,
                    Ok(false) => return,
                    Err(e) => {
                        eprintln!("bench: reading pre-signed transactions failed: {e}");
                        return;
                    }
                },
                None => 0,
            };
            if presigned.is_some() {
                eprintln!("bench: pre-signed transactions used up; signing live from here on");
            }
            let generator = Generator::start(suite, chain_id, keys, first_live_round);
            while let Ok(chunk) = generator.rx.recv() {
                for tx in chunk {
                    if feed_tx.send_blocking(tx.bytes().to_vec()).is_err() {
                        return;
                    }
                }
            }
        })
    };

    // ---- phase 1: saturation
    eprintln!(
        "bench: saturation phase, {saturate_s} s (then until {total_target} txs are committed)"
    );
    let saturating = Arc::new(AtomicBool::new(true));
    let rejected = Arc::new(AtomicU64::new(0));
    let mut submitters = Vec::new();
    // As many concurrent submissions as there are sending accounts (each waits for its
    // admission, which includes the durable pending-pool write).
    for _ in 0..a.accounts.max(128) {
        let node = node.clone();
        let rx = feed_rx.clone();
        let saturating = saturating.clone();
        let rejected = rejected.clone();
        submitters.push(tokio::spawn(async move {
            while saturating.load(Ordering::Relaxed) {
                if node.mempool.len() > SATURATION_BACKLOG {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let Ok(tx) = rx.recv().await else { return };
                loop {
                    match node.submit(&tx, None).await {
                        Ok(_) => break,
                        Err(e) if e.code == "mempool_full" => {
                            tokio::time::sleep(Duration::from_millis(10)).await
                        }
                        Err(e) => {
                            if rejected.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("bench: unexpected rejection {}: {}", e.code, e.message);
                            }
                            break;
                        }
                    }
                }
            }
        }));
    }
    // warm up 3 s, then measure
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c0 = committed.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let mut last = c0;
    for s in 1..=saturate_s {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let c = committed.load(Ordering::Relaxed);
        if s % 5 == 0 {
            eprintln!(
                "bench: t={s}s committed/s={} height={} pool={} rss_mb={:.0}",
                (c - last) / 5,
                node.tip().height,
                node.mempool.len(),
                rss_mb()
            );
            last = c;
        }
    }
    let c1 = committed.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let tps = (c1 - c0) as f64 / secs;
    println!(
        "phase=saturation seconds={secs:.1} committed={} committed_tx_per_s={tps:.0}",
        c1 - c0
    );
    while committed.load(Ordering::Relaxed) < total_target {
        tokio::time::sleep(Duration::from_secs(5)).await;
        eprintln!(
            "bench: committed {} of {total_target}, rss_mb={:.0}",
            committed.load(Ordering::Relaxed),
            rss_mb()
        );
    }
    saturating.store(false, Ordering::Relaxed);
    for s in submitters {
        let _ = s.await;
    }
    // Drain what can commit, so the latency phase starts idle. (Submitters run concurrently,
    // so a few transactions may wait in the pool behind a nonce still in the feed; the latency
    // phase submits that nonce.)
    while node.mempool.has_ready() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last block reaped may still be executing or being written; let it land.
    while node.tip().height != node.head().height || node.mempool.has_ready() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total_committed = committed.load(Ordering::Relaxed);
    let rss = rss_mb();
    println!(
        "total_committed={total_committed} rss_mb={rss:.0} height={}",
        node.tip().height
    );

    // ---- phase 2: latency at a fixed offered rate
    eprintln!("bench: latency phase, {} tx/s for {latency_s} s", rate);
    let latencies = Arc::new(parking_lot::Mutex::new(Vec::<f64>::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let tick = Duration::from_millis(10);
    let per_tick = (rate as f64 * tick.as_secs_f64()).max(1.0);
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    let mut sent = 0u64;
    let mut waiters = Vec::new();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while start.elapsed() < Duration::from_secs(latency_s) {
        interval.tick().await;
        let due = (start.elapsed().as_secs_f64() / tick.as_secs_f64() * per_tick) as u64;
        while sent < due {
            let Ok(tx) = feed_rx.recv().await else { break };
            sent += 1;
            let node = node.clone();
            let latencies = latencies.clone();
            let failures = failures.clone();
            waiters.push(tokio::spawn(async move {
                let t = Instant::now();
                match node.submit(&tx, Some(Duration::from_secs(60))).await {
                    Ok(Submitted::Committed(_)) => {
                        latencies.lock().push(t.elapsed().as_secs_f64() * 1000.0)
                    }
                    other => {
                        if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                            match other {
                                Err(e) => eprintln!("bench: latency-phase failure {}: {}", e.code, e.message),
                                _ => eprintln!("bench: a latency-phase transaction was not committed within 60 s"),
                            }
                        }
                    }
                }
            }));
        }
    }
    let offered = sent as f64 / start.elapsed().as_secs_f64();
    for w in waiters {
        let _ = w.await;
    }
    let cpu_us_per_tx = (cpu_seconds() - cpu_start) * 1e6 / sent.max(1) as f64;
    let mut lat = latencies.lock().clone();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let p50 = percentile(&lat, 0.50);
    let p99 = percentile(&lat, 0.99);
    println!(
        "phase=latency offered_tx_per_s={offered:.0} committed={} failed={} p50_commit_ms={p50:.0} p99_commit_ms={p99:.0} max_ms={:.0} cpu_us_per_tx={cpu_us_per_tx:.0}",
        lat.len(),
        failures.load(Ordering::Relaxed),
        lat.last().copied().unwrap_or(0.0)
    );

    drop(feed_rx);
    drop(feed_tx);
    let _ = stop_tx.send(true);
    let _ = engine_task.await;
    let _ = feeder.join();
    println!("committed_tx_per_s={tps:.0} p99_commit_ms={p99:.0}");
    Ok(())
}

/// A bounded MPMC queue usable from both threads and tasks.
fn async_channel<T>(cap: usize) -> (async_channel::Sender<T>, async_channel::Receiver<T>) {
    async_channel::bounded(cap)
}
