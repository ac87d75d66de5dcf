//! MQTT: the embedded broker (rumqttd) for the default, nothing-external run, and the
//! subscriber that feeds the gateway's pipeline (rumqttc, QoS 1). A message is acknowledged
//! to the broker only after the gateway stored it, so the broker redelivers whatever a crash
//! interrupted; the store keeps one copy per device counter.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chain_core::node::now_ms;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{mpsc, watch};

use crate::gateway::{Gateway, Prepared};
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
                max_inflight_count: 1_000,
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

/// A received message, the connection that must acknowledge it and which connection (counted
/// from 1 per reconnect) delivered it.
struct Received {
    publish: Publish,
    client: AsyncClient,
    connection: u64,
}

/// Subscribes to the device topics on `host:port` and feeds the gateway until `stop`.
///
/// One session, so each device's messages arrive in the order it published them (the counter
/// check depends on it; several sessions in a shared subscription would interleave them).
/// Brokers cap the QoS 1 messages a session may leave unacknowledged (rumqttd: 100;
/// Mosquitto: `max_inflight_messages`, 20 unless configured), so the rate is that window over
/// the time to acknowledge. Three tasks overlap that time: the session hands messages to a
/// preparing task, which takes whatever has arrived (up to 2,000) and verifies its signatures
/// while a storing task checks the counters of the batch before, stores it durably and only
/// then acknowledges it.
pub async fn run_subscriber(
    gateway: Arc<Gateway>,
    host: String,
    port: u16,
    client_id: String,
    stop: watch::Receiver<bool>,
) {
    let (tx, rx) = mpsc::channel::<Received>(20_000);
    tokio::spawn(receive(host, port, client_id, tx, stop.clone()));
    // After a failed store, what the same connection delivered next is dropped unacknowledged
    // too: the broker redelivers it all, in order, on the next connection.
    let dropped_connection = Arc::new(AtomicU64::new(0));
    // Batches verified while one is being stored wait here; the next store takes them all.
    let (prepared_tx, mut prepared_rx) = mpsc::channel::<PreparedBatch>(64);
    tokio::spawn(prepare_batches(
        gateway.clone(),
        rx,
        prepared_tx,
        dropped_connection.clone(),
        stop.clone(),
    ));
    let mut stop = stop;
    loop {
        let PreparedBatch {
            mut received,
            mut msgs,
            mut prepared,
        } = tokio::select! {
            b = prepared_rx.recv() => match b {
                Some(b) => b,
                None => return,
            },
            _ = stop.changed() => return,
        };
        // Whatever else is verified joins this store: the broker's window of unacknowledged
        // messages is shared by the batches in the pipeline, so one sync to disk for all of
        // them is what keeps the rate up.
        while received.len() < 20_000 {
            match prepared_rx.try_recv() {
                Ok(more) => {
                    received.extend(more.received);
                    msgs.extend(more.msgs);
                    prepared.append(more.prepared);
                }
                Err(_) => break,
            }
        }
        let dropped = dropped_connection.load(Ordering::SeqCst);
        if received.iter().any(|m| m.connection <= dropped) {
            let keep: Vec<bool> = received.iter().map(|m| m.connection > dropped).collect();
            prepared = prepared.keep(&keep);
            let mut k = keep.iter();
            msgs.retain(|_| k.next().copied().unwrap_or(false));
            received.retain(|m| m.connection > dropped);
            if received.is_empty() {
                continue;
            }
        }
        match gateway.commit(&msgs, prepared).await {
            Ok(_) => {
                // Stored (or refused for good): now the broker may forget them.
                for m in &received {
                    if let Err(e) = m.client.ack(&m.publish).await {
                        tracing::warn!("acknowledging: {e}");
                    }
                }
            }
            Err(e) => {
                // Not stored: no acknowledgement; the broker redelivers after a reconnect.
                tracing::error!("storing device messages: {e}");
                let connection = received.iter().map(|m| m.connection).max().unwrap_or(0);
                dropped_connection.fetch_max(connection, Ordering::SeqCst);
                let _ = received[0].client.disconnect().await;
            }
        }
    }
}

/// A batch of received messages, verified up to its counters.
struct PreparedBatch {
    received: Vec<Received>,
    msgs: Vec<Incoming>,
    prepared: Prepared,
}

/// Takes whatever has arrived (up to 2,000 messages) and verifies it, one batch ahead of the
/// storing task.
async fn prepare_batches(
    gateway: Arc<Gateway>,
    mut rx: mpsc::Receiver<Received>,
    out: mpsc::Sender<PreparedBatch>,
    dropped_connection: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
            _ = stop.changed() => return,
        };
        let mut received = vec![first];
        while received.len() < 2_000 {
            match rx.try_recv() {
                Ok(m) => received.push(m),
                Err(_) => break,
            }
        }
        let dropped = dropped_connection.load(Ordering::SeqCst);
        received.retain(|m| m.connection > dropped);
        if received.is_empty() {
            continue;
        }
        let now = now_ms() as i64;
        let msgs: Vec<Incoming> = received
            .iter()
            .map(|m| Incoming {
                topic: m.publish.topic.clone(),
                payload: m.publish.payload.to_vec(),
                received_ms: now,
                redelivered: m.publish.dup,
            })
            .collect();
        let prepared = gateway.prepare(&msgs).await;
        let batch = PreparedBatch {
            received,
            msgs,
            prepared,
        };
        if out.send(batch).await.is_err() {
            return;
        }
    }
}

/// The MQTT session: subscribes and hands every received message over, reconnecting after
/// errors.
async fn receive(
    host: String,
    port: u16,
    client_id: String,
    out: mpsc::Sender<Received>,
    mut stop: watch::Receiver<bool>,
) {
    let mut opts = MqttOptions::new(client_id, host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_manual_acks(true);
    // A persistent session: the broker keeps QoS 1 messages while the gateway is away.
    opts.set_clean_session(false);
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut events) = AsyncClient::new(opts, 10_000);
    let mut subscribed = false;
    let mut connection = 0u64;
    loop {
        tokio::select! {
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connection += 1;
                    for t in TOPICS {
                        if let Err(e) = client.subscribe(t, QoS::AtLeastOnce).await {
                            tracing::error!("subscribing to {t}: {e}");
                        }
                    }
                    subscribed = true;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let m = Received { publish: p, client: client.clone(), connection };
                    if out.send(m).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(subscribed, "MQTT connection: {e}; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
            _ = stop.changed() => return,
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
        if let Err(e) = gateway.checkpoint().await {
            tracing::warn!("checkpointing the gateway's store: {e}");
        }
    }
}
