//! `trellis bench --web`: the explorer's block and transaction pages under concurrent clients.
//!
//! An in-process node (SQLite, solo validator) with the full web stack is filled with
//! transactions, then HTTP clients fetch block and transaction pages: first flat out
//! (saturation), then at a fixed offered rate, with each latency measured from the moment the
//! request was due (so a stalled server cannot hide its queue). Prints `web_rps=N p99_ms=M`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chain_core::consensus::{ConsensusEngine, SoloConfig, SoloEngine};
use chain_core::crypto::{SigAlg, SigningKey, Suite};
use chain_core::genesis::{Genesis, GenesisValidator};
use chain_core::node::{Node, NodeConfig, Submitted, now_ms};
use chain_core::storage::Store;
use chain_core::system::GovernanceParams;
use chain_core::types::build_tx;

use crate::bench::percentile;
use crate::config::Config;

pub struct WebBenchArgs {
    pub rate: u64,
    pub duration_s: u64,
    pub clients: usize,
    pub txs: usize,
}

pub async fn run(a: WebBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let alg = SigAlg::Ed25519;
    let suite = Suite::Ed25519Sha256;
    let senders: Vec<SigningKey> = (0..32)
        .map(|i| SigningKey::from_label(alg, &format!("web-bench-{i}")))
        .collect();
    let validator = SigningKey::from_label(alg, "web-bench-validator");
    let admin = SigningKey::from_label(alg, "web-bench-admin");
    let chain_id = format!("web-bench-{}", now_ms());
    let genesis = Genesis {
        chain_id: chain_id.clone(),
        suite,
        genesis_time_ms: now_ms(),
        validators: vec![GenesisValidator {
            name: "web-bench-validator".into(),
            public_key: validator.public_key(),
            power: 1,
            address: None,
        }],
        organisations: vec![crate::bench::bench_org(&admin, &senders)],
        governance: GovernanceParams::default(),
    };
    let store = Store::open(&cfg.database_url()).await?;
    let node = Node::open(store, genesis, crate::registry(), NodeConfig::default()).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let engine = SoloEngine::new(
        validator,
        SoloConfig {
            min_block_interval: Duration::from_millis(20),
            empty_block_interval: None,
        },
    );
    let engine_task = tokio::spawn(engine.run(node.clone(), stop_rx));

    // Fill the chain: every sender anchors documents; blocks of a few dozen transactions.
    eprintln!("bench --web: committing {} transactions", a.txs);
    let per_sender = a.txs.div_ceil(senders.len());
    let mut tasks = Vec::new();
    for (s, key) in senders.into_iter().enumerate() {
        let node = node.clone();
        let chain_id = chain_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(per_sender);
            for n in 0..per_sender as u64 {
                let doc = format!("web-bench-{s}-{n}");
                let hash = chain_core::crypto::HashAlg::Sha256
                    .digest(doc.as_bytes())
                    .to_hex();
                let tx = build_tx(
                    suite,
                    &chain_id,
                    &key,
                    n,
                    now_ms() + 600_000,
                    "notary",
                    "anchor",
                    serde_json::to_vec(&serde_json::json!({"key": doc, "hash": hash}))?,
                );
                if let Submitted::Committed(o) = node
                    .submit(tx.bytes(), Some(Duration::from_secs(30)))
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?
                {
                    ids.push((o.tx_id.to_hex(), o.height));
                }
            }
            anyhow::Ok(ids)
        }));
    }
    let mut tx_ids = Vec::new();
    for t in tasks {
        tx_ids.extend(t.await??);
    }
    let heights: Vec<u64> = (1..=node.tip().height).collect();
    anyhow::ensure!(
        !tx_ids.is_empty() && !heights.is_empty(),
        "no transactions committed"
    );
    eprintln!(
        "bench --web: {} transactions in {} blocks",
        tx_ids.len(),
        heights.len()
    );

    // Kept alive for the whole run: the app's background tasks stop when it is dropped.
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = crate::web_app(&cfg, node.clone(), stop_rx, false).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let base = format!("http://{addr}");
    let paths: Arc<Vec<String>> = Arc::new(
        heights
            .iter()
            .map(|h| format!("{base}/explorer/blocks/{h}"))
            .chain(
                tx_ids
                    .iter()
                    .map(|(id, _)| format!("{base}/explorer/txs/{id}")),
            )
            .collect(),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.clients)
        .build()
        .context("http client")?;
    // Sanity: the pages render (and contain what they should) before anything is timed.
    let first = client.get(&paths[0]).send().await?.text().await?;
    anyhow::ensure!(first.contains("Block #1"), "block page did not render");

    // ---- saturation: closed loop, every client as fast as it can
    let sat_s = 5u64;
    eprintln!("bench --web: saturation, {} clients, {sat_s} s", a.clients);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for c in 0..a.clients {
        let (client, paths, done, failed, stop) = (
            client.clone(),
            paths.clone(),
            done.clone(),
            failed.clone(),
            stop.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = c * 7919;
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_add(104_729);
                let ok = fetch(&client, &paths[i % paths.len()]).await;
                if ok { &done } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(sat_s)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await?;
    }
    let sat_rps = done.load(Ordering::Relaxed) as f64 / sat_s as f64;
    println!(
        "phase=saturation clients={} seconds={sat_s} requests={} failed={} rps={sat_rps:.0}",
        a.clients,
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );

    // ---- fixed rate: requests are due on a schedule spread over the clients
    eprintln!(
        "bench --web: {} req/s offered for {} s",
        a.rate, a.duration_s
    );
    let per_client = a.rate as f64 / a.clients as f64;
    let interval = Duration::from_secs_f64(1.0 / per_client);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs(a.duration_s);
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for c in 0..a.clients {
        let (client, paths, failed) = (client.clone(), paths.clone(), failed.clone());
        let offset = interval.mul_f64(c as f64 / a.clients as f64);
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut due = start + offset;
            let mut i = c * 31;
            while due < end {
                tokio::time::sleep_until(due.into()).await;
                i = i.wrapping_add(7_919);
                let ok = fetch(&client, &paths[i % paths.len()]).await;
                if ok {
                    lat.push(due.elapsed().as_secs_f64() * 1000.0);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                due += interval;
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await?);
    }
    let elapsed = start.elapsed().as_secs_f64().max(0.001);
    lat.sort_by(f64::total_cmp);
    let rps = lat.len() as f64 / elapsed;
    let p50 = percentile(&lat, 0.50);
    let p99 = percentile(&lat, 0.99);
    let max = lat.last().copied().unwrap_or(0.0);
    println!(
        "phase=rate offered_rps={} requests={} failed={} p50_ms={p50:.2} p99_ms={p99:.2} max_ms={max:.2}",
        a.rate,
        lat.len(),
        failed.load(Ordering::Relaxed)
    );
    println!("web_rps={rps:.0} p99_ms={p99:.2}");

    let _ = stop_tx.send(true);
    server.abort();
    let _ = engine_task.await;
    Ok(())
}

/// One page fetch; true when it came back 200 with a body.
async fn fetch(client: &reqwest::Client, url: &str) -> bool {
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => r.bytes().await.is_ok_and(|b| !b.is_empty()),
        _ => false,
    }
}
