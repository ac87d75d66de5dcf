//! MQTT: the embedded broker (rumqttd) for the default, nothing-external run, and the
//! subscriber that feeds the gateway's pipeline (rumqttc, QoS 1). A message is acknowledged
//! to the broker only after the gateway stored it, so the broker redelivers whatever a crash
//! interrupted; the store keeps one copy per device counter.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chain_core::node::now_ms;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::watch;

use crate::gateway::Gateway;
use crate::verify::Incoming;

/// Topics the gateway subscribes to.
pub const TOPICS: [&str; 2] = ["trellis/+/devices/+/readings", "trellis/+/devices/+/scans"];

/// Starts an embedded MQTT broker on `listen` and waits until it accepts connections.
pub async fn start_embedded_broker(listen: SocketAddr) -> Result<(), String> {
    use std::collections::HashMap;
    let mut servers = HashMap::new();
    servers.insert(
        "trellis".to_string(),
        rumqttd::ServerSettings {
            name: "trellis".into(),
            listen,
            tls: None,
            next_connection_delay_ms: 1,
            connections: rumqttd::ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: 16 * 1024,
                max_inflight_count: 500,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        },
    );
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 1_000,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(servers),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!("embedded MQTT broker stopped: {e}");
            }
        })
        .map_err(|e| e.to_string())?;
    // rumqttd reports a failed bind only in its log: wait until the port answers.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "the embedded MQTT broker does not answer on {listen}"
    ))
}

/// Subscribes to the device topics on `host:port` and feeds the gateway until `stop`.
pub async fn run_subscriber(
    gateway: Arc<Gateway>,
    host: String,
    port: u16,
    client_id: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut opts = MqttOptions::new(client_id, host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_manual_acks(true);
    // A persistent session: the broker keeps QoS 1 messages while the gateway is away.
    opts.set_clean_session(false);
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut events) = AsyncClient::new(opts, 10_000);
    let mut pending: Vec<Publish> = Vec::new();
    // Messages wait at most this long to be verified together with the ones after them.
    const GATHER: Duration = Duration::from_millis(10);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut subscribed = false;
    loop {
        let wake =
            deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for t in TOPICS {
                        if let Err(e) = client.subscribe(t, QoS::AtLeastOnce).await {
                            tracing::error!("subscribing to {t}: {e}");
                        }
                    }
                    subscribed = true;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if pending.is_empty() {
                        deadline = Some(tokio::time::Instant::now() + GATHER);
                    }
                    pending.push(p);
                    if pending.len() < 2_000
                        && deadline.is_some_and(|d| tokio::time::Instant::now() < d)
                    {
                        continue;
                    }
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(subscribed, "MQTT connection: {e}; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
            _ = tokio::time::sleep_until(wake), if deadline.is_some() => {}
            _ = stop.changed() => return,
        }
        if pending.is_empty() {
            continue;
        }
        deadline = None;
        let batch = std::mem::take(&mut pending);
        let now = now_ms() as i64;
        let msgs: Vec<Incoming> = batch
            .iter()
            .map(|p| Incoming {
                topic: p.topic.clone(),
                payload: p.payload.to_vec(),
                received_ms: now,
            })
            .collect();
        match gateway.ingest(&msgs).await {
            Ok(_) => {
                // Stored (or refused for good): now the broker may forget them.
                for p in &batch {
                    if let Err(e) = client.ack(p).await {
                        tracing::warn!("acknowledging: {e}");
                    }
                }
            }
            Err(e) => {
                // Not stored: no acknowledgement, the broker redelivers after a reconnect.
                tracing::error!("storing device messages: {e}");
                let _ = client.disconnect().await;
            }
        }
    }
}

/// Closes and anchors batches until `stop`; a node that cannot be reached leaves them pending.
pub async fn run_anchoring(
    gateway: Arc<Gateway>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        loop {
            match gateway.close_batch(false).await {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!("closing a batch: {e}");
                    break;
                }
            }
        }
        if let Err(e) = gateway.anchor_pending().await {
            tracing::warn!("anchoring: {e} (retrying)");
        }
    }
}
