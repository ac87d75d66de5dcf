//! The device simulator (`trellis devices simulate`): registers simulated sensors on chain
//! (or reuses them) and publishes signed readings over MQTT at a given rate, with a share of
//! bad messages on request (forged signature, replayed counter, unknown device, garbage, clock
//! far off) — the same kinds the gateway must refuse.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chain_core::crypto::{SigAlg, SigningKey};
use chain_core::node::now_ms;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::{Value, json};

use crate::contract::{self, Binding};
use crate::gateway::Chain;
use crate::payload::sign_envelope;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub org: String,
    pub devices: usize,
    /// Messages per second, all devices together.
    pub rate: u64,
    pub duration: Duration,
    /// Share of bad messages (0.0–1.0).
    pub bad_ratio: f64,
    pub binding: Option<Binding>,
    pub mqtt_host: String,
    pub mqtt_port: u16,
    pub alg: SigAlg,
}

#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub registered: usize,
    pub published: u64,
    pub bad: u64,
}

/// The simulated devices' keys: derived from their number, so a second run reuses them.
pub fn device_key(alg: SigAlg, org: &str, i: usize) -> SigningKey {
    SigningKey::from_label(alg, &format!("sim-{org}-{i}"))
}

/// Registers the devices that are not registered yet, signed by `admin` (through `chain`).
pub async fn register(chain: &dyn Chain, cfg: &SimConfig) -> Result<usize, String> {
    let known: std::collections::HashSet<String> =
        chain.devices().await?.into_iter().map(|d| d.did).collect();
    let mut n = 0;
    for i in 0..cfg.devices {
        let key = device_key(cfg.alg, &cfg.org, i).public_key();
        if known.contains(&key.did()) {
            continue;
        }
        let mut args = json!({"public_key": key.to_text(), "name": format!("Simulated sensor {i}"), "kind": "sensor"});
        if let Some(b) = &cfg.binding {
            args["binding"] = serde_json::to_value(b).map_err(|e| e.to_string())?;
        }
        let c = chain.call(contract::NAME, "register_device", &args).await?;
        if !c.code.is_empty() && c.code != "device_exists" {
            return Err(format!("registering device {i}: {}: {}", c.code, c.message));
        }
        n += 1;
    }
    Ok(n)
}

/// A small deterministic generator: simulation needs variety, not secrecy.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn time_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Publishes readings at `cfg.rate` for `cfg.duration`.
pub async fn publish(cfg: &SimConfig) -> Result<SimReport, String> {
    let keys: Arc<Vec<SigningKey>> = Arc::new(
        (0..cfg.devices.max(1))
            .map(|i| device_key(cfg.alg, &cfg.org, i))
            .collect(),
    );
    let mut opts = MqttOptions::new(
        format!("trellis-sim-{}-{}", cfg.org, now_ms()),
        cfg.mqtt_host.clone(),
        cfg.mqtt_port,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut events) = AsyncClient::new(opts, 20_000);
    let pump = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let mut rng = Rng(now_ms() | 1);
    // Counters start from the clock, so every run continues above the last one.
    let base_seq = now_ms();
    let mut temps = vec![4.0f64; keys.len()];
    // The last counter each device sent (a replay repeats it).
    let mut last_seq: Vec<Option<u64>> = vec![None; keys.len()];
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / cfg.rate.max(1) as f64);
    let mut report = SimReport::default();
    let mut n: u64 = 0;
    while start.elapsed() < cfg.duration {
        // Publish in small bursts to keep to the rate without a timer per message.
        let due = (start.elapsed().as_secs_f64() / interval.as_secs_f64()) as u64;
        while n < due {
            let i = (n as usize) % keys.len();
            let key = &keys[i];
            let did = key.public_key().did();
            temps[i] = (temps[i] + (rng.unit() - 0.5) * 0.2).clamp(1.0, 9.0);
            let seq = base_seq + n;
            let mut time = now_ms() as i64;
            // A key other than the device's own (forged or unknown device), when the message is bad.
            let mut other: Option<SigningKey> = None;
            let mut topic_did = did.clone();
            let mut garbage = false;
            let bad = rng.unit() < cfg.bad_ratio;
            let mut seq_used = seq;
            if bad {
                match rng.next() % 5 {
                    0 => other = Some(SigningKey::from_label(cfg.alg, "sim-forger")),
                    // A replay repeats the device's last counter; before its first message there
                    // is nothing to replay, so that one is forged instead.
                    1 => match last_seq[i] {
                        Some(s) => seq_used = s,
                        None => other = Some(SigningKey::from_label(cfg.alg, "sim-forger")),
                    },
                    2 => {
                        let k = SigningKey::from_label(
                            cfg.alg,
                            &format!("sim-unknown-{}", rng.next() % 1000),
                        );
                        topic_did = k.public_key().did();
                        other = Some(k);
                    }
                    3 => garbage = true,
                    _ => time += 3_600_000,
                }
            }
            let topic = format!("trellis/{}/devices/{topic_did}/readings", cfg.org);
            let body: Vec<u8> = if garbage {
                b"{\"payload\": 42}".to_vec()
            } else {
                let payload_key = other.as_ref().unwrap_or(key);
                let device = if payload_key.public_key().did() == topic_did {
                    topic_did.clone()
                } else {
                    did.clone()
                };
                let payload: Value = json!({"device": device, "seq": seq_used, "time": time_text(time),
                    "type": "gs1:Temperature", "uom": "CEL", "value": (temps[i] * 10.0).round() / 10.0});
                sign_envelope(payload_key, &payload)
            };
            client
                .publish(topic, QoS::AtLeastOnce, false, body)
                .await
                .map_err(|e| e.to_string())?;
            if !bad {
                last_seq[i] = Some(seq_used);
            }
            report.published += 1;
            report.bad += u64::from(bad);
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the client's queue drain before leaving.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = client.disconnect().await;
    pump.abort();
    Ok(report)
}

/// The demo's live sensor: registered once (bound to `binding`), then publishing a signed
/// temperature reading every `every` until `stop`, following a slow daily-like curve inside
/// the cold-chain range, so the lot's chart grows while one watches.
pub async fn run_demo_sensor(
    chain: &dyn Chain,
    alg: SigAlg,
    org: &str,
    binding: Binding,
    mqtt: (String, u16),
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let key = SigningKey::from_label(alg, &format!("demo-sensor-{org}"));
    let did = key.public_key().did();
    let known = chain.devices().await?.into_iter().any(|d| d.did == did);
    if !known {
        let args = json!({"public_key": key.public_key().to_text(), "name": "Truck 7 probe (live demo)",
            "kind": "sensor", "binding": serde_json::to_value(&binding).map_err(|e| e.to_string())?});
        let c = chain.call(contract::NAME, "register_device", &args).await?;
        if !c.code.is_empty() && c.code != "device_exists" {
            return Err(format!(
                "registering the demo sensor: {}: {}",
                c.code, c.message
            ));
        }
    }
    let mut opts = MqttOptions::new(format!("trellis-demo-sensor-{org}"), mqtt.0, mqtt.1);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 100);
    let pump = tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                // The broker is away: retry without spinning.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    let topic = format!("trellis/{org}/devices/{did}/readings");
    loop {
        let now = now_ms();
        // Counters from the clock keep increasing across restarts.
        let phase = (now % 600_000) as f64 / 600_000.0 * std::f64::consts::TAU;
        let celsius = ((4.2 + 0.8 * phase.sin()) * 10.0).round() / 10.0;
        let payload = json!({"device": did, "seq": now, "time": time_text(now as i64),
            "type": "gs1:Temperature", "uom": "CEL", "value": celsius});
        if let Err(e) = client
            .publish(
                topic.clone(),
                QoS::AtLeastOnce,
                false,
                sign_envelope(&key, &payload),
            )
            .await
        {
            tracing::warn!("demo sensor: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => break,
        }
    }
    let _ = client.disconnect().await;
    pump.abort();
    Ok(())
}
