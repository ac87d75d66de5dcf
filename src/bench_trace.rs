//! `trellis bench --trace`: the traceability app end to end on an in-process node (SQLite, solo
//! validator, the full web stack, the demo chain seeded).
//!
//! 1. capture: EPCIS documents POSTed to `/epcis/capture` by four organisations at once; the
//!    clock stops when every capture job reports success, i.e. its events are validated,
//!    hashed, committed on chain by the `trace` contract and queryable in the read model. The
//!    events build a 10-level transformation graph (each lot made from three lots of the level
//!    before) plus observations of its lots, 100,000 events in all (quick: 20,000).
//! 2. consumer: Digital Link resolver pages at a fixed offered rate (1,000 req/s) while a
//!    capture stream keeps the chain busy; latency is measured from the moment a request was
//!    due.
//! 3. trace graph: forward and backward trace of lots in the middle of the graph over the
//!    committed state.
//!
//! The last line is `trace_capture_events_per_s=N consumer_p99_ms=M trace_graph_ms=K`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use serde_json::{Value, json};
use traceability::domain::LotRef;

use crate::bench::percentile;

pub struct TraceBenchArgs {
    pub quick: bool,
    pub rate: u64,
    pub duration_s: u64,
    pub clients: usize,
}

const LEVELS: usize = 10;
const INPUTS_PER_LOT: usize = 3;
const EVENTS_PER_DOC: usize = 1_000;
const PRODUCT: &str = "09521234000099";

fn gtin(level: usize) -> String {
    // One GTIN per level keeps the lots of a level apart; the check digit is computed.
    let body = format!("0952123400{:03}", 100 + level);
    match traceability::gs1::check_digit(&body) {
        Ok(d) => format!("{body}{d}"),
        Err(_) => PRODUCT.to_string(),
    }
}

fn lot_class(level: usize, i: usize) -> String {
    format!("https://id.gs1.org/01/{}/10/L{level}-{i}", gtin(level))
}

fn time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The events of the benchmark graph: transformations level by level, then observations.
fn graph_events(total: usize, width: usize, t0: u64) -> Vec<Value> {
    let mut out = Vec::with_capacity(total);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut t = t0;
    for level in 1..LEVELS {
        for i in 0..width {
            t += 1;
            let inputs: Vec<Value> = (0..INPUTS_PER_LOT)
                .map(|_| {
                    json!({"epcClass": lot_class(level - 1, (next() as usize) % width), "quantity": 10, "uom": "KGM"})
                })
                .collect();
            out.push(json!({
                "type": "TransformationEvent",
                "eventTime": time(t),
                "eventTimeZoneOffset": "+08:00",
                "bizStep": "commissioning",
                "disposition": "active",
                "inputQuantityList": inputs,
                "outputQuantityList": [{"epcClass": lot_class(level, i), "quantity": 30, "uom": "KGM"}],
                "readPoint": {"id": "https://id.gs1.org/414/9521234000204"},
            }));
        }
    }
    let steps = ["shipping", "receiving", "storing", "inspecting"];
    while out.len() < total {
        t += 1;
        let n = next() as usize;
        let (level, i) = (n % LEVELS, (n / LEVELS) % width);
        out.push(json!({
            "type": "ObjectEvent",
            "eventTime": time(t),
            "eventTimeZoneOffset": "+08:00",
            "action": "OBSERVE",
            "bizStep": steps[n % steps.len()],
            "disposition": "in_progress",
            "epcList": [],
            "quantityList": [{"epcClass": lot_class(level, i), "quantity": 5, "uom": "KGM"}],
            "readPoint": {"id": "https://id.gs1.org/414/9521234000303"},
            "bizLocation": {"id": "https://id.gs1.org/414/9521234000303"},
        }));
    }
    out
}

fn document(events: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": time(chain_core::node::now_ms()),
        "epcisBody": {"eventList": events},
    }))
    .unwrap_or_default()
}

struct Capturer {
    client: reqwest::Client,
    base: String,
    auth: String,
}

impl Capturer {
    /// POSTs a document and returns its job location.
    async fn post(&self, body: Vec<u8>) -> anyhow::Result<String> {
        for _ in 0..600 {
            let r = self
                .client
                .post(format!("{}/epcis/capture", self.base))
                .header("Authorization", &self.auth)
                .header("Content-Type", "application/ld+json")
                .body(body.clone())
                .send()
                .await?;
            let status = r.status().as_u16();
            if status == 202 {
                return r
                    .headers()
                    .get("location")
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
                    .context("capture without a Location");
            }
            if status == 503 {
                // The pool is full: back off as told.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let text = r.text().await.unwrap_or_default();
            anyhow::bail!("capture refused ({status}): {text}");
        }
        anyhow::bail!("the pool stayed full")
    }

    async fn wait(&self, location: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let job: Value = self
                .client
                .get(format!("{}{location}", self.base))
                .header("Authorization", &self.auth)
                .send()
                .await?
                .json()
                .await?;
            if job["running"] == false {
                anyhow::ensure!(job["success"] == true, "capture failed: {job}");
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "capture job stuck: {job}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub async fn run(a: TraceBenchArgs) -> anyhow::Result<()> {
    let crate::bench::SoloBench {
        dir: _dir,
        cfg,
        node,
        stop_tx,
        stop_rx,
        engine_task,
    } = crate::bench::SoloBench::start("trace-bench").await?;
    let (app, web, trace_app) =
        crate::build_web(&cfg, node.clone(), stop_rx.clone(), false).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let links = traceability::demo::seed(&node, &web.custody, &base)
        .await
        .map_err(|e| anyhow::anyhow!("seeding the demo: {e}"))?;
    let users = std::fs::read_to_string(cfg.data_dir.join("web-users.txt"))?;
    let capturers: Vec<Capturer> = users
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .map(|(u, p)| Capturer {
            client: reqwest::Client::new(),
            base: base.clone(),
            auth: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            ),
        })
        .collect();
    anyhow::ensure!(!capturers.is_empty(), "no web users");
    let capturers = Arc::new(capturers);

    // ---- 1. capture throughput
    let total = if a.quick { 20_000 } else { 100_000 };
    let width = if a.quick { 200 } else { 1_000 };
    let events = graph_events(
        total,
        width,
        chain_core::node::now_ms() - 30 * 24 * 3600 * 1000,
    );
    let docs: Vec<Vec<u8>> = events.chunks(EVENTS_PER_DOC).map(document).collect();
    eprintln!(
        "bench --trace: capturing {} events in {} documents over {} organisations",
        events.len(),
        docs.len(),
        capturers.len()
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    let queue = Arc::new(parking_lot::Mutex::new(docs));
    for c in 0..capturers.len() {
        let (capturers, queue) = (capturers.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            let cap = &capturers[c];
            let mut jobs = Vec::new();
            loop {
                let doc = queue.lock().pop();
                let Some(doc) = doc else { break };
                jobs.push(cap.post(doc).await?);
                // Keep a few captures in flight per organisation, not the whole backlog.
                if jobs.len() >= 3 {
                    cap.wait(&jobs.remove(0)).await?;
                }
            }
            for j in jobs {
                cap.wait(&j).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let capture_s = started.elapsed().as_secs_f64();
    let events_per_s = events.len() as f64 / capture_s;
    println!(
        "phase=capture events={} seconds={capture_s:.1} events_per_s={events_per_s:.0} height={}",
        events.len(),
        node.tip().height
    );

    // ---- 2. consumer pages at a fixed rate, with the chain busy
    let busy = Arc::new(AtomicBool::new(true));
    let busy_events = Arc::new(AtomicU64::new(0));
    let background = {
        let (capturers, busy, busy_events) = (capturers.clone(), busy.clone(), busy_events.clone());
        tokio::spawn(async move {
            let mut t = chain_core::node::now_ms() - 24 * 3600 * 1000;
            while busy.load(Ordering::Relaxed) {
                let batch: Vec<Value> = (0..200)
                    .map(|i| {
                        t += 1;
                        json!({"type": "ObjectEvent", "eventTime": time(t), "eventTimeZoneOffset": "+00:00",
                               "action": "OBSERVE", "bizStep": "inspecting", "epcList": [],
                               "quantityList": [{"epcClass": lot_class(i % LEVELS, i % 50), "quantity": 1, "uom": "KGM"}]})
                    })
                    .collect();
                let cap = &capturers[0];
                if let Ok(job) = cap.post(document(&batch)).await
                    && cap.wait(&job).await.is_ok()
                {
                    busy_events.fetch_add(200, Ordering::Relaxed);
                }
            }
        })
    };
    let pages: Arc<Vec<String>> = Arc::new(
        [
            links.ok.clone(),
            links.excursion.clone(),
            links.recalled.clone(),
        ]
        .into_iter()
        .chain((1001..=1006).map(|n| format!("{base}/01/09521234000020/10/CHZ-2611A/21/{n}")))
        .collect(),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.clients)
        .build()?;
    let first = client.get(&pages[0]).send().await?.text().await?;
    anyhow::ensure!(first.contains("CHZ-2611A"), "consumer page did not render");
    eprintln!(
        "bench --trace: consumer pages, {} req/s offered for {} s, capture running",
        a.rate, a.duration_s
    );
    let per_client = a.rate as f64 / a.clients as f64;
    let interval = Duration::from_secs_f64(1.0 / per_client);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs(a.duration_s);
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for c in 0..a.clients {
        let (client, pages, failed) = (client.clone(), pages.clone(), failed.clone());
        let offset = interval.mul_f64(c as f64 / a.clients as f64);
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut due = start + offset;
            let mut i = c;
            while due < end {
                tokio::time::sleep_until(due.into()).await;
                i = i.wrapping_add(1);
                let ok = match client
                    .get(&pages[i % pages.len()])
                    // A handful of phones: scans are recorded, no counterfeit storm.
                    .header("User-Agent", format!("bench-phone-{}", c % 3))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
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
    busy.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64().max(0.001);
    lat.sort_by(f64::total_cmp);
    let p50 = percentile(&lat, 0.50);
    let p99 = percentile(&lat, 0.99);
    println!(
        "phase=consumer offered_rps={} requests={} failed={} rps={:.0} p50_ms={p50:.2} p99_ms={p99:.2} max_ms={:.2} background_events_captured={}",
        a.rate,
        lat.len(),
        failed.load(Ordering::Relaxed),
        lat.len() as f64 / elapsed,
        lat.last().copied().unwrap_or(0.0),
        busy_events.load(Ordering::Relaxed)
    );
    let _ = tokio::time::timeout(Duration::from_secs(30), background).await;

    // ---- 3. forward + backward trace in the middle of the graph
    let mut graph_ms = Vec::new();
    let mut sizes = Vec::new();
    for i in 0..5 {
        let root = LotRef {
            gtin: gtin(LEVELS / 2),
            lot: format!("L{}-{}", LEVELS / 2, (i * 37) % width),
        };
        let t = Instant::now();
        let g = traceability::graph::trace(&trace_app.node, &root, usize::MAX)
            .await
            .map_err(|e| anyhow::anyhow!("trace: {e}"))?;
        graph_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let levels = g.nodes.iter().map(|n| n.level).max().unwrap_or(0)
            - g.nodes.iter().map(|n| n.level).min().unwrap_or(0)
            + 1;
        sizes.push((g.nodes.len(), g.edges.len(), levels));
    }
    graph_ms.sort_by(f64::total_cmp);
    let worst = graph_ms.last().copied().unwrap_or(0.0);
    println!(
        "phase=trace_graph runs={} lots_edges_levels={sizes:?} median_ms={:.1} max_ms={worst:.1}",
        graph_ms.len(),
        percentile(&graph_ms, 0.5)
    );
    println!(
        "trace_capture_events_per_s={events_per_s:.0} consumer_p99_ms={p99:.2} trace_graph_ms={worst:.0}"
    );
    let _ = stop_tx.send(true);
    server.abort();
    let _ = engine_task.await;
    Ok(())
}
