//! `trellis bench --iot`: signed device readings end to end — published over MQTT, verified,
//! stored and anchored on chain by the gateway.
//!
//! Three parts, as deployed: this process runs the node (SQLite, solo validator, its API) and
//! the MQTT broker (rumqttd, embedded) and plays the devices; the gateway is a separate
//! `trellis gateway` process, so its memory is measured on its own. The devices' readings are
//! signed before the clock starts (devices sign on their own hardware) and published at a fixed
//! offered rate for the run's duration; each reading's device time is the moment it was due, so
//! a reading's latency counts from when it was due to be published to when the transaction
//! anchoring its batch committed, including any wait in the broker.
//!
//! The last line is `iot_readings_per_s=N p99_reading_to_anchor_ms=M`, where N is the readings
//! anchored divided by the time from the first due publish to the last anchoring.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chain_core::crypto::SigningKey;
use chain_core::keystore::Keystore;
use chain_core::node::{Submitted, now_ms};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;

use crate::bench::percentile;

pub struct IotBenchArgs {
    pub quick: bool,
    /// Offered readings per second.
    pub rate: u64,
    pub duration_s: u64,
    pub devices: usize,
}

const ORG: &str = "swiftcold";
/// MQTT connections the devices' messages are spread over.
const PUBLISHERS: usize = 4;

struct Signed {
    topic: String,
    body: Vec<u8>,
}

fn time_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Registers the benchmark's sensors in bulk: transactions submitted back to back, then the
/// last one awaited.
async fn register_devices(
    node: &Arc<chain_core::node::Node>,
    admin: &SigningKey,
    keys: &[SigningKey],
) -> anyhow::Result<()> {
    let account = node.account(&admin.public_key()).await?;
    let mut last = None;
    for (i, k) in keys.iter().enumerate() {
        let args = json!({"public_key": k.public_key().to_text(), "name": format!("Bench sensor {i}"), "kind": "sensor"});
        let tx = chain_core::types::build_tx(
            node.info.suite,
            &node.info.chain_id,
            admin,
            account.next_nonce + i as u64,
            now_ms() + 300_000,
            iot_gateway::contract::NAME,
            "register_device",
            serde_json::to_vec(&args)?,
        );
        let wait = (i + 1 == keys.len()).then(|| Duration::from_secs(120));
        match node.submit(tx.bytes(), wait).await {
            Ok(Submitted::Committed(c)) => last = Some(c),
            Ok(Submitted::Pending(_)) => {}
            Err(e) => anyhow::bail!("registering sensor {i}: {}: {}", e.code, e.message),
        }
    }
    let c = last.context("the last registration did not commit")?;
    anyhow::ensure!(
        c.receipt.code.is_empty(),
        "registering sensors: {}",
        c.receipt.message
    );
    Ok(())
}

/// How the gateway took messages from the broker, from its `/metrics`: the mean messages per
/// ingested batch and the mean time to verify and store one (what bounds a broker session's
/// rate: its unacknowledged-message window over that time).
async fn ingest_figures(metrics_url: &str) -> anyhow::Result<String> {
    let text = reqwest::get(metrics_url).await?.text().await?;
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let batches = value("trellis_iot_ingest_batch_messages_count");
    let messages = value("trellis_iot_ingest_batch_messages_sum");
    let seconds = value("trellis_iot_ingest_seconds_sum");
    Ok(format!(
        "ingest_batches={batches:.0} mean_batch={:.1} mean_ingest_ms={:.2}",
        messages / batches.max(1.0),
        seconds * 1000.0 / batches.max(1.0)
    ))
}

fn gateway_rss_peak_mb(pid: u32) -> f64 {
    crate::bench::proc_status_mb(&pid.to_string(), "VmHWM:")
}

pub async fn run(a: IotBenchArgs) -> anyhow::Result<()> {
    let crate::bench::SoloBench {
        dir,
        cfg,
        node,
        stop_tx,
        stop_rx: _,
        engine_task,
    } = crate::bench::SoloBench::start("iot-bench").await?;
    let admin = Keystore::open(cfg.keystore_dir())?
        .load(&format!("{ORG}-admin"), &crate::config::passphrase())
        .context("organisation admin key")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = format!("http://{}", listener.local_addr()?);
    let app = chain_core::api::router(node.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let broker: std::net::SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    iot_gateway::mqtt::start_embedded_broker(broker)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;

    let alg = node.info.suite.sig();
    let keys: Vec<SigningKey> = (0..a.devices)
        .map(|i| iot_gateway::sim::device_key(alg, ORG, i))
        .collect();
    eprintln!("bench --iot: registering {} sensors", keys.len());
    register_devices(&node, &admin, &keys).await?;

    // The gateway, alone in its process, against this node's API and this broker.
    let exe = std::env::current_exe()?;
    let gateway_http: std::net::SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let mut gateway = std::process::Command::new(exe)
        .args([
            "gateway",
            "--node",
            &api,
            "--listen",
            &gateway_http.to_string(),
        ])
        .env("TRELLIS_DATA_DIR", dir.path())
        .env("TRELLIS_MQTT_BROKER", broker.to_string())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting `trellis gateway`")?;
    let gateway_pid = gateway.id();

    // Sign every reading before the clock starts; each carries the time it is due.
    let total = (a.rate * a.duration_s) as usize;
    let dids: Vec<String> = keys.iter().map(|k| k.public_key().did()).collect();
    let sign_started = Instant::now();
    let probe: Vec<Signed> = sign_range(&keys, &dids, 0..1_000.min(total), 0, a.rate);
    let per_msg = sign_started.elapsed().as_secs_f64() / probe.len().max(1) as f64;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let estimate_ms = (per_msg * total as f64 / threads as f64 * 1_000.0 * 1.3) as i64;
    let t0 = now_ms() as i64 + estimate_ms + 3_000;
    eprintln!(
        "bench --iot: signing {total} readings from {} sensors (about {} s)",
        keys.len(),
        estimate_ms / 1000
    );
    let chunk = total.div_ceil(threads).max(1);
    let msgs: Vec<Signed> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (keys, dids) = (&keys, &dids);
                s.spawn(move || {
                    let lo = (t * chunk).min(total);
                    let hi = ((t + 1) * chunk).min(total);
                    sign_range(keys, dids, lo..hi, t0, a.rate)
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    anyhow::ensure!(msgs.len() == total, "signing failed");
    let late = now_ms() as i64 - t0;
    if late > 0 {
        eprintln!("bench --iot: signing overran its estimate by {late} ms (counted as latency)");
    }
    while (now_ms() as i64) < t0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Publish at the offered rate over a few connections, each message at (or after) its due time.
    eprintln!(
        "bench --iot: publishing {} readings/s for {} s",
        a.rate, a.duration_s
    );
    let msgs = Arc::new(msgs);
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let msgs = msgs.clone();
        let rate = a.rate;
        publishers.push(tokio::spawn(async move {
            let mut opts =
                MqttOptions::new(format!("bench-devices-{p}"), "127.0.0.1", broker.port());
            opts.set_keep_alive(Duration::from_secs(30));
            opts.set_inflight(1_000);
            opts.set_max_packet_size(64 * 1024, 64 * 1024);
            let (client, mut events) = AsyncClient::new(opts, 10_000);
            let pump = tokio::spawn(async move { while events.poll().await.is_ok() {} });
            let mut i = p;
            while i < msgs.len() {
                let due = t0 + (i as u64 * 1000 / rate) as i64;
                let now = now_ms() as i64;
                if due > now {
                    tokio::time::sleep(Duration::from_millis((due - now) as u64)).await;
                    continue;
                }
                let m = &msgs[i];
                client
                    .publish(m.topic.clone(), QoS::AtLeastOnce, false, m.body.clone())
                    .await?;
                i += PUBLISHERS;
            }
            // Let the client's queue drain.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = client.disconnect().await;
            pump.abort();
            anyhow::Ok(())
        }));
    }

    // Wait until every reading is anchored (the gateway's own store says so).
    let store = iot_gateway::store::open(&dir.path().join("gateway.db")).await?;
    let anchored_sql = Statement::from_string(
        store.get_database_backend(),
        "SELECT COALESCE(SUM(count), 0) FROM iot_batch WHERE status = 'anchored'",
    );
    let deadline = Instant::now() + Duration::from_secs(a.duration_s + 300);
    let mut rss_peak = 0.0f64;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak = rss_peak.max(gateway_rss_peak_mb(gateway_pid));
        let n: i64 = store
            .query_one_raw(anchored_sql.clone())
            .await?
            .and_then(|r| r.try_get_by_index(0).ok())
            .unwrap_or(0);
        if n as usize >= total {
            break;
        }
        if let Ok(Some(status)) = gateway.try_wait() {
            anyhow::bail!("the gateway exited ({status}) with {n} of {total} readings anchored");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {n} of {total} readings anchored in time"
        );
    }
    for p in publishers {
        p.await??;
    }
    rss_peak = rss_peak.max(gateway_rss_peak_mb(gateway_pid));

    let rows = store
        .query_all_raw(Statement::from_string(
            store.get_database_backend(),
            "SELECT r.time_ms, b.anchored_ms FROM iot_reading r JOIN iot_batch b ON r.batch_id = b.id",
        ))
        .await?;
    let mut latencies: Vec<f64> = Vec::with_capacity(rows.len());
    let mut last_anchor = t0;
    for r in &rows {
        let due: i64 = r.try_get_by_index(0)?;
        let anchored: Option<i64> = r.try_get_by_index(1)?;
        let anchored = anchored.context("an anchored batch without its time")?;
        last_anchor = last_anchor.max(anchored);
        latencies.push((anchored - due) as f64);
    }
    anyhow::ensure!(
        latencies.len() == total,
        "{} readings stored for {total} published",
        latencies.len()
    );
    latencies.sort_by(f64::total_cmp);
    let per_s = total as f64 / ((last_anchor - t0).max(1) as f64 / 1000.0);
    let batches: i64 = store
        .query_one_raw(Statement::from_string(
            store.get_database_backend(),
            "SELECT COUNT(*) FROM iot_batch",
        ))
        .await?
        .and_then(|r| r.try_get_by_index(0).ok())
        .unwrap_or(0);

    let ingest = ingest_figures(&format!("http://{gateway_http}/metrics"))
        .await
        .unwrap_or_default();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &gateway_pid.to_string()])
        .status();
    let _ = gateway.wait();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), engine_task).await;

    println!(
        "readings={total} offered_per_s={} seconds={:.1} batches={batches} height={} p50_ms={:.0} p99_ms={:.0} max_ms={:.0} gateway_rss_peak_mb={rss_peak:.0} {ingest}",
        a.rate,
        (last_anchor - t0) as f64 / 1000.0,
        node.tip().height,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0),
    );
    if a.quick {
        eprintln!("bench --iot: quick run ({} s)", a.duration_s);
    }
    println!(
        "iot_readings_per_s={per_s:.0} p99_reading_to_anchor_ms={:.0}",
        percentile(&latencies, 0.99)
    );
    Ok(())
}

/// Signs readings `range` (reading i: sensor i mod n, its counter i div n + 1, due at
/// t0 + i / rate).
fn sign_range(
    keys: &[SigningKey],
    dids: &[String],
    range: std::ops::Range<usize>,
    t0: i64,
    rate: u64,
) -> Vec<Signed> {
    let n = keys.len().max(1);
    range
        .map(|i| {
            let d = i % n;
            let due = t0 + (i as u64 * 1000 / rate.max(1)) as i64;
            let value = 4.0 + ((i / n) % 40) as f64 / 10.0;
            let payload = json!({"device": dids[d], "seq": i / n + 1, "time": time_text(due),
                "type": "gs1:Temperature", "uom": "CEL", "value": value});
            Signed {
                topic: format!("trellis/{ORG}/devices/{}/readings", dids[d]),
                body: iot_gateway::payload::sign_envelope(&keys[d], &payload),
            }
        })
        .collect()
}
