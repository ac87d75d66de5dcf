//! `trellis bench --validators N`: N validator processes (BFT, SQLite each) on this machine,
//! driven over their HTTP APIs by a signing load generator in this process.
//!
//! 1. saturation: keep every node's pool supplied (batches round-robin over the nodes, which
//!    relay them to each other) and count committed transactions per second;
//! 2. latency: offer a fixed rate (default 2,000 tx/s) and measure submit → commit, where
//!    commit is when the block holding the transaction is readable on node 0.
//!
//! The last line is `committed_tx_per_s=N p99_commit_ms=M`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chain_core::crypto::{SigningKey, Suite};
use chain_core::genesis::{Genesis, GenesisValidator};
use chain_core::keystore::{KdfParams, Keystore};
use chain_core::node::now_ms;
use chain_core::system::GovernanceParams;
use chain_core::types::SignedTx;
use parking_lot::Mutex;
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::config::{Config, ConsensusKind};

const PASS: &str = "bench-passphrase";
/// Blocks small enough that every validator can re-execute one well within the timeouts while
/// four nodes share two cores.
const BFT_MAX_BLOCK_TXS: usize = 4_000;
/// Transactions the saturation phase keeps sent but not yet committed.
const SENDER_BACKLOG: u64 = 40_000;

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let ls = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    ls.iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect::<anyhow::Result<Vec<_>>>()
}

fn sign_round(suite: Suite, chain_id: &str, keys: &[SigningKey], round: u64) -> Vec<SignedTx> {
    crate::bench::sign_round(
        suite,
        chain_id,
        keys,
        "bft-bench",
        round,
        now_ms() + 600_000,
    )
}

/// Submit a batch to one node until every transaction is admitted or refused for good: those
/// refused because a pool is full are sent again (a gap in an account's nonces would leave all
/// its later transactions waiting forever). Refusals for good are counted in `refused`; the
/// first few are printed.
async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    txs: &[SignedTx],
    refused: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<()> {
    let mut todo: Vec<&SignedTx> = txs.iter().collect();
    for attempt in 0..600u32 {
        if todo.is_empty() {
            break;
        }
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let body = json!({"txs": todo.iter().map(|t| hex::encode(t.bytes())).collect::<Vec<_>>()});
        let r = match client
            .post(format!("{url}/api/v1/txs/batch"))
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r,
            // A full node may refuse the whole request (503): try again.
            Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => continue,
            Ok(r) => anyhow::bail!("batch refused: {}", r.status()),
            Err(e) => return Err(e.into()),
        };
        let v: Value = r.json().await?;
        let results = v["results"].as_array().cloned().unwrap_or_default();
        let mut again = Vec::new();
        for (t, res) in todo.iter().zip(results.iter()) {
            match res["error"]["code"].as_str() {
                None => {}
                Some("mempool_full") => again.push(*t),
                Some(code) => {
                    let earlier = refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if earlier < 5 {
                        eprintln!(
                            "bench: transaction refused: {code}: {}",
                            res["error"]["message"].as_str().unwrap_or("")
                        );
                    }
                }
            }
        }
        todo = again;
    }
    if !todo.is_empty() {
        eprintln!(
            "bench: {} transactions still refused as the pool is full; given up",
            todo.len()
        );
        refused.fetch_add(todo.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

async fn height(client: &reqwest::Client, url: &str) -> Option<u64> {
    let v: Value = client
        .get(format!("{url}/api/v1/chain"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["height"].as_u64()
}

/// A block as seen on node 0: when it became readable, its transaction count and ids.
type CommittedBlock = (Instant, u64, Vec<String>);

/// Follows node 0's chain: per block, the time it became readable, its transaction count and,
/// with `with_ids`, its transaction ids. Without ids it reads headers only (a page of them per
/// poll) — the saturation phase needs only counts, and reading every block's transaction list
/// would load node 0 with work no client of a real network asks for.
async fn observe(
    client: reqwest::Client,
    url: String,
    from: u64,
    with_ids: bool,
    commits: Arc<Mutex<Vec<CommittedBlock>>>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut next = from + 1;
    while !*stop.borrow() {
        let Some(h) = height(&client, &url).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if !with_ids && next <= h {
            let limit = (h - next + 1).min(100);
            let page: Option<Value> = match client
                .get(format!(
                    "{url}/api/v1/blocks?before={}&limit={limit}",
                    next + limit
                ))
                .send()
                .await
            {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            let mut counts: Vec<(u64, u64)> = page
                .as_ref()
                .and_then(|p| p["blocks"].as_array())
                .map(|bs| {
                    bs.iter()
                        .filter_map(|b| Some((b["height"].as_u64()?, b["tx_count"].as_u64()?)))
                        .collect()
                })
                .unwrap_or_default();
            counts.sort_unstable();
            let now = Instant::now();
            for (height, n) in counts {
                if height == next {
                    commits.lock().push((now, n, Vec::new()));
                    next += 1;
                }
            }
        }
        while with_ids && next <= h {
            let Ok(r) = client
                .get(format!("{url}/api/v1/blocks/{next}"))
                .send()
                .await
            else {
                break;
            };
            let Ok(b) = r.json::<Value>().await else {
                break;
            };
            let ids: Vec<String> = b["txs"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t["id"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let n = b["tx_count"].as_u64().unwrap_or(ids.len() as u64);
            commits.lock().push((Instant::now(), n, ids));
            next += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What `trellis bench --validators N` runs with (from the command line).
pub struct BftBenchArgs {
    pub validators: usize,
    pub quick: bool,
    /// Seconds of the saturation phase (default 60; quick 20).
    pub duration: Option<u64>,
    /// Seconds of the latency phase (default 20; quick 10).
    pub latency_duration: Option<u64>,
    /// Offered load of the latency phase, transactions per second.
    pub rate: u64,
    pub accounts: usize,
    pub suite: Suite,
    /// Sign the saturation phase's transactions during the run instead of before it.
    pub sign_live: bool,
}

pub async fn run(a: BftBenchArgs) -> anyhow::Result<()> {
    let BftBenchArgs {
        validators,
        quick,
        duration,
        latency_duration,
        rate,
        accounts,
        suite,
        sign_live,
    } = a;
    anyhow::ensure!(
        (1..=16).contains(&validators),
        "--validators must be 1 to 16"
    );
    let saturate_s = duration.unwrap_or(if quick { 20 } else { 60 });
    let latency_s = latency_duration.unwrap_or(if quick { 10 } else { 20 });
    let alg = suite.sig();
    let dir = tempfile::tempdir()?;
    // TRELLIS_BENCH_KEEP=1 keeps the nodes' directories and logs for inspection.
    let keep = std::env::var("TRELLIS_BENCH_KEEP").is_ok_and(|v| v == "1");
    let keys: Vec<SigningKey> = (0..accounts)
        .into_par_iter()
        .map(|i| SigningKey::from_label(alg, &format!("bft-bench-{i}")))
        .collect();
    let vkeys: Vec<SigningKey> = (0..validators)
        .map(|i| SigningKey::from_label(alg, &format!("bft-bench-validator-{i}")))
        .collect();
    let admin = SigningKey::from_label(alg, "bft-bench-admin");
    let chain_id = format!("bft-bench-{}", now_ms());
    let ports = free_ports(2 * validators)?;
    let (api, p2p) = ports.split_at(validators);
    let genesis = Genesis {
        chain_id: chain_id.clone(),
        suite,
        genesis_time_ms: now_ms(),
        validators: vkeys
            .iter()
            .enumerate()
            .map(|(i, k)| GenesisValidator {
                name: format!("validator-{i}"),
                public_key: k.public_key(),
                power: 1,
                address: Some(format!("/ip4/127.0.0.1/tcp/{}", p2p[i])),
            })
            .collect(),
        organisations: vec![crate::bench::bench_org(&admin, &keys)],
        governance: GovernanceParams::default(),
    };
    let exe = std::env::current_exe()?;
    let mut procs = Procs(Vec::new());
    let urls: Vec<String> = api
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    for (i, vkey) in vkeys.iter().enumerate() {
        let nd = dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&nd)?;
        Keystore::open(nd.join("keystore"))?
            .with_kdf(KdfParams::insecure_fast())
            .save("validator", vkey, PASS)?;
        std::fs::write(nd.join("genesis.json"), serde_json::to_vec(&genesis)?)?;
        let others = |f: &dyn Fn(usize) -> String| -> Vec<String> {
            (0..validators).filter(|j| *j != i).map(f).collect()
        };
        let cfg = Config {
            data_dir: Path::new("").to_path_buf(),
            listen: format!("127.0.0.1:{}", api[i]),
            consensus: ConsensusKind::Bft,
            p2p_listen: format!("/ip4/127.0.0.1/tcp/{}", p2p[i]),
            p2p_peers: others(&|j| format!("/ip4/127.0.0.1/tcp/{}", p2p[j])),
            peer_apis: others(&|j| urls[j].clone()),
            empty_block_interval_ms: 1_000,
            max_block_txs: BFT_MAX_BLOCK_TXS,
            timeout_propose_ms: 5_000,
            ..Config::default()
        };
        std::fs::write(nd.join("trellis.toml"), toml::to_string(&cfg)?)?;
        let log = std::fs::File::create(nd.join("node.log"))?;
        procs.0.push(
            Command::new(&exe)
                .arg("--data-dir")
                .arg(&nd)
                .arg("node")
                .env("TRELLIS_PASSPHRASE", PASS)
                .env(
                    "RUST_LOG",
                    if keep {
                        "info,chain_core=debug"
                    } else {
                        "warn"
                    },
                )
                .env_remove("DATABASE_URL")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting a validator")?,
        );
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    for u in &urls {
        while height(&client, u).await.unwrap_or(0) < 1 {
            anyhow::ensure!(Instant::now() < deadline, "validators did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!(
        "bench: {validators} validators up ({} accounts); saturation for {saturate_s} s",
        keys.len()
    );

    // ---------------------------------------------------------------- saturation
    let start_height = height(&client, &urls[0]).await.unwrap_or(0);
    let commits = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (obs_stop_tx, obs_stop_rx) = tokio::sync::watch::channel(false);
    let observer = tokio::spawn(observe(
        client.clone(),
        urls[0].clone(),
        start_height,
        false,
        commits.clone(),
        obs_stop_rx,
    ));
    let keys = Arc::new(keys);
    let (round_tx, round_rx) = async_channel::bounded::<(u64, Vec<SignedTx>)>(4);
    // Clients sign on their own machines: unless --sign-live, the rounds the saturation phase
    // can use (the warm-up and the phase at up to 8,000 tx/s, plus the senders' backlog) are
    // signed before the clock starts, so signing does not take the validators' cores. Past
    // them, rounds are signed live.
    let presigned: Vec<Vec<SignedTx>> = if sign_live {
        Vec::new()
    } else {
        let wanted = (saturate_s + 3) * 8_000 + 2 * SENDER_BACKLOG;
        let rounds = wanted.div_ceil(keys.len().max(1) as u64);
        eprintln!(
            "bench: signing {} transactions before the clock starts",
            rounds * keys.len() as u64
        );
        let (keys, chain_id) = (keys.clone(), chain_id.clone());
        tokio::task::spawn_blocking(move || {
            (0..rounds)
                .map(|r| sign_round(suite, &chain_id, &keys, r))
                .collect()
        })
        .await?
    };
    let signer = {
        let keys = keys.clone();
        let chain_id = chain_id.clone();
        let stop = stop_rx.clone();
        tokio::task::spawn_blocking(move || {
            let mut round = 0u64;
            for txs in presigned {
                if *stop.borrow() || round_tx.send_blocking((round, txs)).is_err() {
                    return round;
                }
                round += 1;
            }
            while !*stop.borrow() {
                let txs = sign_round(suite, &chain_id, &keys, round);
                if round_tx.send_blocking((round, txs)).is_err() {
                    return round;
                }
                round += 1;
            }
            round
        })
    };
    // Senders stop at a backlog of SENDER_BACKLOG transactions beyond what was committed, so
    // the pools stay full without overflowing.
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut senders = Vec::new();
    for s in 0..4usize {
        let client = client.clone();
        let urls = urls.clone();
        let rx = round_rx.clone();
        let sent = sent.clone();
        let commits = commits.clone();
        let refused = refused.clone();
        senders.push(tokio::spawn(async move {
            let mut k = s;
            // Every signed round is sent (also after the stop), so nonces have no gaps.
            while let Ok((_, txs)) = rx.recv().await {
                loop {
                    let committed: u64 = commits.lock().iter().map(|c| c.1).sum();
                    if sent.load(std::sync::atomic::Ordering::Relaxed) < committed + SENDER_BACKLOG
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let url = &urls[k % urls.len()];
                k += 1;
                if post_batch(&client, url, &txs, &refused).await.is_ok() {
                    sent.fetch_add(txs.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c0: u64 = commits.lock().iter().map(|c| c.1).sum();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(saturate_s)).await;
    let c1: u64 = commits.lock().iter().map(|c| c.1).sum();
    let secs = t0.elapsed().as_secs_f64();
    let tps = (c1 - c0) as f64 / secs;
    println!(
        "phase=saturation validators={validators} seconds={secs:.1} committed={} committed_tx_per_s={tps:.0}",
        c1 - c0
    );
    // Stop the load and let the pools drain before the latency phase.
    let _ = stop_tx.send(true);
    let _ = signer.await;
    for s in senders {
        let _ = s.await;
    }
    let _ = obs_stop_tx.send(true);
    let _ = observer.await;
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v: Option<Value> = match client.get(format!("{}/api/v1/chain", urls[0])).send().await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        if v.as_ref().and_then(|v| v["mempool"].as_u64()) == Some(0)
            || Instant::now() > drain_deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // ---------------------------------------------------------------- latency
    let h0 = height(&client, &urls[0]).await.unwrap_or(0);
    let account: Value = client
        .get(format!(
            "{}/api/v1/accounts/{}",
            urls[0],
            keys[0].public_key()
        ))
        .send()
        .await?
        .json()
        .await?;
    let rounds_signed = account["nonce"].as_u64().unwrap_or(0);
    let commits = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let observer = tokio::spawn(observe(
        client.clone(),
        urls[0].clone(),
        h0,
        true,
        commits.clone(),
        stop_rx.clone(),
    ));
    // Pre-sign the whole phase: rounds continue after the saturation phase's last nonce.
    let per_tick = (rate / 10).max(1) as usize;
    let ticks = latency_s * 10;
    let needed = per_tick * ticks as usize;
    let rounds_needed = needed.div_ceil(keys.len()) as u64;
    let mut pre: Vec<SignedTx> = Vec::with_capacity(needed);
    for r in 0..rounds_needed {
        pre.extend(sign_round(suite, &chain_id, &keys, rounds_signed + r));
    }
    // Interleave so each tick carries distinct senders in nonce order.
    pre.truncate(needed);
    let submitted: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut sends = Vec::new();
    for (i, chunk) in pre.chunks(per_tick).enumerate() {
        tick.tick().await;
        let now = Instant::now();
        {
            let mut s = submitted.lock();
            for t in chunk {
                s.insert(t.id().to_hex(), now);
            }
        }
        let client = client.clone();
        let url = urls[i % urls.len()].clone();
        let chunk = chunk.to_vec();
        let refused = refused.clone();
        sends.push(tokio::spawn(async move {
            if let Err(e) = post_batch(&client, &url, &chunk, &refused).await {
                eprintln!("bench: a latency-phase batch failed: {e}");
            }
        }));
    }
    for s in sends {
        let _ = s.await;
    }
    let wait_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Only this phase's transactions count: blocks after h0 may still carry a few left
        // over from the saturation phase, and counting those ended the wait early (the slowest
        // of this phase then went unmeasured).
        let done: usize = {
            let submitted = submitted.lock();
            commits
                .lock()
                .iter()
                .flat_map(|c| c.2.iter())
                .filter(|id| submitted.contains_key(*id))
                .count()
        };
        if done >= needed || Instant::now() > wait_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(true);
    let _ = observer.await;
    let submitted = submitted.lock();
    let mut lat: Vec<f64> = Vec::with_capacity(needed);
    for (at, _, ids) in commits.lock().iter() {
        for id in ids {
            if let Some(t) = submitted.get(id) {
                lat.push(at.duration_since(*t).as_secs_f64() * 1000.0);
            }
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| crate::bench::percentile(&lat, q);
    println!(
        "phase=latency validators={validators} offered_tx_per_s={rate} committed={} of {needed} refused={} p50_commit_ms={:.0} p99_commit_ms={:.0} max_ms={:.0}",
        lat.len(),
        refused.load(std::sync::atomic::Ordering::Relaxed),
        p(0.5),
        p(0.99),
        lat.last().copied().unwrap_or(0.0)
    );
    println!("committed_tx_per_s={tps:.0} p99_commit_ms={:.0}", p(0.99));
    drop(procs);
    if keep {
        eprintln!("bench: node directories kept in {}", dir.keep().display());
    }
    Ok(())
}
