//! MQTT: the embedded broker (rumqttd) for the default, nothing-external run, and the
//! subscriber that feeds the gateway's pipeline (rumqttc, QoS 1). A message is acknowledged
//! to the broker only once it is in the gateway's inbox on disk, so a crash loses nothing: the
//! broker redelivers what was not yet acknowledged, the inbox what was not yet stored, and the
//! store keeps one copy per device counter.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chain_core::node::now_ms;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::gateway::{Gateway, Prepared};
use crate::inbox::Inbox;
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

/// Messages in the inbox (acknowledged), in arrival order, the inbox sequence number of the
/// last of them, and their share of [`HELD_IN_MEMORY`].
struct Held {
    msgs: Vec<Incoming>,
    last_seq: i64,
    permit: OwnedSemaphorePermit,
}

impl Held {
    /// Takes in the messages held after these.
    fn absorb(&mut self, later: Held) {
        self.msgs.extend(later.msgs);
        self.last_seq = later.last_seq;
        self.permit.merge(later.permit);
    }
}

/// Held messages, verified up to their counters.
struct PreparedBatch {
    msgs: Vec<Incoming>,
    prepared: Prepared,
    last_seq: i64,
    permit: OwnedSemaphorePermit,
}

impl PreparedBatch {
    /// Takes in the batch prepared after this one.
    fn absorb(&mut self, later: PreparedBatch) {
        self.msgs.extend(later.msgs);
        self.prepared.append(later.prepared);
        self.last_seq = later.last_seq;
        self.permit.merge(later.permit);
    }
}

/// The next item from `rx` (made into a batch by `start`) with what else is already waiting
/// absorbed into it while `room` allows; `None` once `rx` closes or `stop` changes.
async fn take_ready<T, B>(
    rx: &mut mpsc::Receiver<T>,
    stop: &mut watch::Receiver<bool>,
    start: impl FnOnce(T) -> B,
    room: impl Fn(&B) -> bool,
    absorb: impl Fn(&mut B, T),
) -> Option<B> {
    let mut batch = tokio::select! {
        m = rx.recv() => start(m?),
        _ = stop.changed() => return None,
    };
    while room(&batch) {
        match rx.try_recv() {
            Ok(more) => absorb(&mut batch, more),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Most acknowledged messages waiting in memory to be stored. When verification and the store
/// fall behind, the gateway stops taking messages in and the backlog waits at the broker
/// rather than in the gateway's memory.
const HELD_IN_MEMORY: usize = 2_000;

/// Most messages appended to the inbox at once.
const APPEND_MAX: usize = 1_000;

/// Subscribes to the device topics on `host:port` and feeds the gateway until `stop`.
///
/// One session, so each device's messages arrive in the order it published them (the counter
/// check depends on it; several sessions in a shared subscription would interleave them).
/// Brokers cap the QoS 1 messages a session may leave unacknowledged (rumqttd: 100;
/// Mosquitto: `max_inflight_messages`, 20 unless configured), so the rate is that window over
/// the time to acknowledge. A message is therefore acknowledged as soon as it is in the
/// `inbox` on disk; then, from memory and in arrival order, a preparing task verifies the
/// signatures of whatever has arrived while a storing task checks the counters of the batch
/// before and stores it. What the inbox held at start (a crash came between the append and the
/// store) goes through first.
pub async fn run_subscriber(
    gateway: Arc<Gateway>,
    inbox: Arc<Inbox>,
    host: String,
    port: u16,
    client_id: String,
    stop: watch::Receiver<bool>,
) {
    let held_at_start = match inbox.held().await {
        Ok(h) => h,
        Err(e) => {
            // Starting without it could store later messages before earlier ones.
            tracing::error!("reading the gateway's inbox: {e}; not subscribing");
            return;
        }
    };
    let in_memory = Arc::new(Semaphore::new(HELD_IN_MEMORY));
    let (held_tx, held_rx) = mpsc::channel::<Held>(HELD_IN_MEMORY);
    // Batches verified while one is being stored wait here; the next store takes them all.
    let (prepared_tx, mut prepared_rx) = mpsc::channel::<PreparedBatch>(64);
    tokio::spawn(prepare_batches(
        gateway.clone(),
        held_rx,
        prepared_tx,
        stop.clone(),
    ));
    let processed = Arc::new(AtomicI64::new(0));
    tokio::spawn(release_inbox(
        inbox.clone(),
        processed.clone(),
        stop.clone(),
    ));
    if !held_at_start.is_empty() {
        tracing::info!(
            messages = held_at_start.len(),
            "storing what the gateway's inbox held at start"
        );
    }
    // In a task of its own: the storing loop below makes room in memory for the next chunk.
    let feed = {
        let stop = stop.clone();
        async move {
            for chunk in held_at_start.chunks(APPEND_MAX) {
                let Ok(permit) = in_memory
                    .clone()
                    .acquire_many_owned(chunk.len() as u32)
                    .await
                else {
                    return;
                };
                let held = Held {
                    last_seq: chunk.last().map_or(0, |(seq, _)| *seq),
                    msgs: chunk.iter().map(|(_, m)| m.clone()).collect(),
                    permit,
                };
                if held_tx.send(held).await.is_err() {
                    return;
                }
            }
            drop(held_at_start);
            // Only now: what the broker delivers comes after what the inbox held.
            let (tx, rx) = mpsc::channel::<Received>(20_000);
            tokio::spawn(receive(host, port, client_id, tx, stop.clone()));
            append_to_inbox(inbox, in_memory, rx, held_tx, stop).await;
        }
    };
    tokio::spawn(feed);
    let mut stop = stop;
    loop {
        // Whatever else is verified joins this store: one sync to disk for all of them.
        let Some(PreparedBatch {
            msgs,
            mut prepared,
            last_seq,
            permit,
        }) = take_ready(
            &mut prepared_rx,
            &mut stop,
            |b| b,
            |b| b.msgs.len() < HELD_IN_MEMORY,
            PreparedBatch::absorb,
        )
        .await
        else {
            return;
        };
        // The messages are acknowledged already (the inbox holds them), so a store that fails
        // is tried again, these messages before any later ones.
        let mut attempt = 0u32;
        loop {
            match gateway.commit(&msgs, prepared).await {
                Ok(_) => break,
                Err(e) => {
                    attempt += 1;
                    tracing::error!(attempt, "storing device messages: {e}; retrying");
                    let wait = Duration::from_millis(200 * u64::from(attempt.min(25)));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => return,
                    }
                    // The failed store rolled the counters back: verify again from the start.
                    prepared = gateway.prepare(&msgs).await;
                }
            }
        }
        processed.store(last_seq, Ordering::SeqCst);
        drop(permit);
    }
}

/// Takes whatever the MQTT session delivered (up to [`APPEND_MAX`] messages), appends it to the
/// inbox and acknowledges it, then hands it to the preparing task. After a failed append, what the same
/// connection delivered next is dropped unacknowledged too: the broker redelivers it all, in
/// order, on the next connection.
async fn append_to_inbox(
    inbox: Arc<Inbox>,
    in_memory: Arc<Semaphore>,
    mut rx: mpsc::Receiver<Received>,
    out: mpsc::Sender<Held>,
    mut stop: watch::Receiver<bool>,
) {
    let mut dropped_connection = 0u64;
    loop {
        let Some(mut received) = take_ready(
            &mut rx,
            &mut stop,
            |m| vec![m],
            |r| r.len() < APPEND_MAX,
            Vec::push,
        )
        .await
        else {
            return;
        };
        received.retain(|m| m.connection > dropped_connection);
        if received.is_empty() {
            continue;
        }
        // Wait for room in memory before acknowledging more.
        let permit = tokio::select! {
            p = in_memory.clone().acquire_many_owned(received.len() as u32) => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
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
        match inbox.append(&msgs).await {
            Ok(last_seq) => {
                // On disk: now the broker may forget them.
                for m in &received {
                    if let Err(e) = m.client.ack(&m.publish).await {
                        tracing::warn!("acknowledging: {e}");
                    }
                }
                let held = Held {
                    msgs,
                    last_seq,
                    permit,
                };
                if out.send(held).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // Not held: no acknowledgement; the broker redelivers after a reconnect.
                tracing::error!("appending device messages to the inbox: {e}");
                dropped_connection = received.iter().map(|m| m.connection).max().unwrap_or(0);
                let _ = received[0].client.disconnect().await;
            }
        }
    }
}

/// Takes whatever is held (up to [`APPEND_MAX`] messages) and verifies it, one batch ahead of the
/// storing task.
async fn prepare_batches(
    gateway: Arc<Gateway>,
    mut rx: mpsc::Receiver<Held>,
    out: mpsc::Sender<PreparedBatch>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let Some(Held {
            msgs,
            last_seq,
            permit,
        }) = take_ready(
            &mut rx,
            &mut stop,
            |h| h,
            |h| h.msgs.len() < APPEND_MAX,
            Held::absorb,
        )
        .await
        else {
            return;
        };
        let prepared = gateway.prepare(&msgs).await;
        let batch = PreparedBatch {
            msgs,
            prepared,
            last_seq,
            permit,
        };
        if out.send(batch).await.is_err() {
            return;
        }
    }
}

/// Every quarter second, forgets the inbox's messages that are stored (or refused for good).
async fn release_inbox(
    inbox: Arc<Inbox>,
    processed: Arc<AtomicI64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut released = 0i64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => return,
        }
        let through = processed.load(Ordering::SeqCst);
        if through > released {
            match inbox.release(through).await {
                Ok(()) => released = through,
                Err(e) => tracing::warn!("releasing stored messages from the inbox: {e}"),
            }
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
