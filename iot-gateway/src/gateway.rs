//! The gateway's pipeline, independent of how messages arrive: verify a batch of messages, store
//! the accepted ones durably (the outbox), close batches in arrival order, anchor each batch's
//! root on chain with the gateway's key, report lot-bound readings to the traceability
//! contract's cold-chain rule, and prove any stored reading.
//!
//! Crash safety: a message is stored before it leaves the inbox (`crate::inbox`, where it is
//! before the broker is acknowledged); a batch is recorded (with its
//! members and root) before it is anchored, under an id derived from its first message, and
//! the chain anchors an id once — so after a crash at any point the same batch is anchored
//! exactly once and no accepted reading is lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chain_core::crypto::{HashAlg, SigAlg, SigningKey};
use chain_core::node::{Node, Submitted, now_ms};
use parking_lot::Mutex;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use serde_json::{Value, json};

use crate::batch::{Batch, ReadingProof};
use crate::contract::{self, Binding, Device};
use crate::metrics::GatewayMetrics;
use crate::payload::{Message, Reject};
use crate::store::{self, iot_batch, iot_reading};
use crate::verify::{DeviceInfo, Incoming, Staged, Verifier, verify_staged};

/// What the gateway needs from the chain: calls signed with its own key, and reads.
#[async_trait::async_trait]
pub trait Chain: Send + Sync {
    /// Signs `contract.method(args)` with the gateway key, submits it and waits for its commit.
    async fn call(&self, contract: &str, method: &str, args: &Value) -> Result<Committed, String>;
    /// Every device registered on chain.
    async fn devices(&self) -> Result<Vec<Device>, String>;
    /// One device's record, if it is registered.
    async fn device(&self, did: &str) -> Result<Option<Device>, String>;
}

/// A committed call: its receipt code is empty on success.
#[derive(Debug, Clone)]
pub struct Committed {
    pub tx_id: String,
    pub height: u64,
    pub code: String,
    pub message: String,
}

/// The chain of the node this gateway runs in.
pub struct NodeChain {
    node: Arc<Node>,
    key: SigningKey,
    /// One call at a time: nonces follow each other.
    lock: tokio::sync::Mutex<()>,
}

impl NodeChain {
    pub fn new(node: Arc<Node>, key: SigningKey) -> Self {
        Self {
            node,
            key,
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

#[async_trait::async_trait]
impl Chain for NodeChain {
    async fn call(&self, contract: &str, method: &str, args: &Value) -> Result<Committed, String> {
        let _one = self.lock.lock().await;
        let account = self
            .node
            .account(&self.key.public_key())
            .await
            .map_err(|e| e.to_string())?;
        let tx = chain_core::types::build_tx(
            self.node.info.suite,
            &self.node.info.chain_id,
            &self.key,
            account.next_nonce,
            now_ms() + 120_000,
            contract,
            method,
            serde_json::to_vec(args).map_err(|e| e.to_string())?,
        );
        match self
            .node
            .submit(tx.bytes(), Some(Duration::from_secs(30)))
            .await
        {
            Ok(Submitted::Committed(out)) => Ok(Committed {
                tx_id: out.tx_id.to_hex(),
                height: out.height,
                code: out.receipt.code.clone(),
                message: out.receipt.message.clone(),
            }),
            Ok(Submitted::Pending(_)) => Err("not committed in time".into()),
            Err(e) => Err(format!("{}: {}", e.code, e.message)),
        }
    }

    async fn devices(&self) -> Result<Vec<Device>, String> {
        let rows = self
            .node
            .state_list(contract::NAME, b"device/", None, 1_000_000)
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect())
    }

    async fn device(&self, did: &str) -> Result<Option<Device>, String> {
        self.node
            .state_json::<Device>(contract::NAME, &contract::device_key(did))
            .await
            .map_err(|e| e.to_string())
    }
}

/// The chain of a node reached over its HTTP API: the standalone gateway (`trellis gateway`).
/// When the node cannot be reached, calls fail and batches stay in the outbox until it can.
pub struct HttpChain {
    base: String,
    key: SigningKey,
    http: reqwest::Client,
    lock: tokio::sync::Mutex<()>,
}

impl HttpChain {
    pub fn new(base: &str, key: SigningKey) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            key,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(40))
                .build()
                .unwrap_or_default(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| format!("node unreachable: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("{path}: HTTP {}", r.status()));
        }
        r.json().await.map_err(|e| e.to_string())
    }
}

#[async_trait::async_trait]
impl Chain for HttpChain {
    async fn call(&self, contract: &str, method: &str, args: &Value) -> Result<Committed, String> {
        let _one = self.lock.lock().await;
        let chain = self.get("/api/v1/chain").await?;
        let suite: chain_core::crypto::Suite = serde_json::from_value(chain["suite"].clone())
            .map_err(|e| format!("chain suite: {e}"))?;
        let chain_id = chain["chain_id"].as_str().ok_or("no chain id")?.to_string();
        let account = self
            .get(&format!("/api/v1/accounts/{}", self.key.public_key()))
            .await?;
        let nonce = account["next_nonce"].as_u64().ok_or("no next_nonce")?;
        let tx = chain_core::types::build_tx(
            suite,
            &chain_id,
            &self.key,
            nonce,
            now_ms() + 120_000,
            contract,
            method,
            serde_json::to_vec(args).map_err(|e| e.to_string())?,
        );
        let r = self
            .http
            .post(format!("{}/api/v1/txs", self.base))
            .json(&json!({"tx": hex::encode(tx.bytes()), "wait": "commit", "timeout_ms": 30_000}))
            .send()
            .await
            .map_err(|e| format!("node unreachable: {e}"))?;
        let status = r.status();
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() || v["status"] != "committed" {
            return Err(format!("{} ({status}): {v}", tx.id().to_hex()));
        }
        Ok(Committed {
            tx_id: tx.id().to_hex(),
            height: v["height"].as_u64().unwrap_or(0),
            code: v["receipt"]["code"].as_str().unwrap_or("").to_string(),
            message: v["receipt"]["message"].as_str().unwrap_or("").to_string(),
        })
    }

    async fn devices(&self) -> Result<Vec<Device>, String> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!(
                "/api/v1/state/{}?prefix=device%2F&limit=1000",
                contract::NAME
            );
            if let Some(a) = &after {
                path.push_str("&after=");
                path.push_str(&percent_encode(a));
            }
            let page = self.get(&path).await?;
            let entries = page["entries"].as_array().cloned().unwrap_or_default();
            let n = entries.len();
            for e in entries {
                after = e["key"].as_str().map(str::to_string);
                if let Ok(d) = serde_json::from_value::<Device>(e["value"].clone()) {
                    out.push(d);
                }
            }
            if n < 1000 {
                return Ok(out);
            }
        }
    }

    async fn device(&self, did: &str) -> Result<Option<Device>, String> {
        // A one-entry listing: a plain read, without the proof a state query would build.
        let key = contract::device_key(did);
        let page = self
            .get(&format!(
                "/api/v1/state/{}?prefix={}&limit=1",
                contract::NAME,
                percent_encode(&key)
            ))
            .await?;
        Ok(page["entries"]
            .as_array()
            .and_then(|e| e.first())
            .filter(|e| e["key"].as_str() == Some(key.as_str()))
            .and_then(|e| serde_json::from_value::<Device>(e["value"].clone()).ok()))
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Names this gateway's batches (`{id}-{first message}`).
    pub id: String,
    /// A batch closes at this many messages…
    pub batch_max: usize,
    /// …or when its oldest message has waited this long.
    pub batch_wait: Duration,
    /// How far a device clock may be from the gateway's.
    pub max_skew: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            id: "gw".into(),
            batch_max: 5_000,
            batch_wait: Duration::from_millis(500),
            max_skew: Duration::from_secs(300),
        }
    }
}

pub struct Gateway {
    db: DatabaseConnection,
    /// Every write goes through this connection: `db` unless [`Gateway::with_writer`] set one.
    writer: DatabaseConnection,
    chain: Arc<dyn Chain>,
    sig: SigAlg,
    hash: HashAlg,
    cfg: GatewayConfig,
    verifier: Mutex<Verifier>,
    metrics: GatewayMetrics,
    /// Devices looked up on chain and not found, with when: not asked again for a while.
    not_registered: Mutex<HashMap<String, std::time::Instant>>,
}

/// Most stored messages per insert statement: 15 values each stay below SQLite's 32,766 bound
/// parameters (and PostgreSQL's 65,535).
const ROWS_PER_STATEMENT: usize = 2_000;
/// How long a device found unregistered is refused without asking the chain again.
const NOT_REGISTERED_TTL: Duration = Duration::from_secs(1);
/// At most this many unknown devices are looked up per ingested batch, so that messages
/// naming made-up devices cannot turn into a flood of chain reads.
const LOOKUPS_PER_BATCH: usize = 16;

/// A batch parsed and signature-checked by [`Gateway::prepare`], waiting for its counters to
/// be checked and its messages stored.
pub struct Prepared {
    staged: Vec<Staged>,
    started: std::time::Instant,
}

impl Prepared {
    /// Adds a later batch: one commit stores both, in order.
    pub fn append(&mut self, later: Prepared) {
        self.staged.extend(later.staged);
    }
}

/// What the gateway has seen of one device since it started (the device page shows it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceActivity {
    pub accepted: u64,
    /// Gateway time of the last accepted message.
    pub last_accepted_ms: Option<i64>,
    /// Refusals by reason code.
    pub rejected: BTreeMap<&'static str, u64>,
}

impl Gateway {
    /// Opens the store, loads the registered devices and each device's last stored counter.
    pub async fn open(
        db: DatabaseConnection,
        chain: Arc<dyn Chain>,
        sig: SigAlg,
        hash: HashAlg,
        cfg: GatewayConfig,
    ) -> Result<Self, String> {
        store::migrate(&db).await.map_err(|e| e.to_string())?;
        let mut verifier = Verifier::new(sig, cfg.max_skew.as_millis() as i64);
        let last: Vec<(String, Option<i64>)> = iot_reading::Entity::find()
            .select_only()
            .column(iot_reading::Column::Device)
            .column_as(iot_reading::Column::Seq.max(), "seq")
            .group_by(iot_reading::Column::Device)
            .into_tuple()
            .all(&db)
            .await
            .map_err(|e| e.to_string())?;
        for (device, seq) in last {
            if let Some(s) = seq {
                verifier.set_last_seq(&device, s.max(0) as u64);
            }
        }
        let metrics = GatewayMetrics::default();
        let unbatched = iot_reading::Entity::find()
            .filter(iot_reading::Column::BatchId.is_null())
            .count(&db)
            .await
            .map_err(|e| e.to_string())?;
        let in_pending: Option<i64> = iot_batch::Entity::find()
            .select_only()
            .column_as(iot_batch::Column::Count.sum(), "n")
            .filter(iot_batch::Column::Status.eq("pending"))
            .into_tuple()
            .one(&db)
            .await
            .map_err(|e| e.to_string())?
            .flatten();
        metrics
            .outbox
            .set(unbatched as i64 + in_pending.unwrap_or(0));
        let g = Self {
            writer: db.clone(),
            db,
            chain,
            sig,
            hash,
            cfg,
            verifier: Mutex::new(verifier),
            metrics,
            not_registered: Mutex::new(HashMap::new()),
        };
        // A node that cannot be reached now does not stop the gateway: the registry is loaded
        // on the next refresh; until then messages from unknown devices wait on the broker.
        if let Err(e) = g.refresh_devices().await {
            tracing::warn!("loading the device registry: {e}");
        }
        Ok(g)
    }

    /// Writes through `writer`, one connection of its own to the same store
    /// ([`store::open_writer`]), so that its page cache survives from one write to the next
    /// (SQLite drops a connection's cache whenever another connection wrote).
    pub fn with_writer(mut self, writer: DatabaseConnection) -> Self {
        self.writer = writer;
        self
    }

    /// Reloads the device registry from the chain (registrations, bindings, revocations).
    pub async fn refresh_devices(&self) -> Result<usize, String> {
        let devices = self.chain.devices().await?;
        let mut v = self.verifier.lock();
        for d in &devices {
            if let Some(info) = DeviceInfo::from_record(d) {
                v.set_device(&d.did, info);
            }
        }
        Ok(devices.len())
    }

    /// A device registered a moment ago may publish before the block-driven registry reload has
    /// run: its record is read from the chain before its messages are refused, so it does not
    /// lose its first readings.
    async fn look_up_unknown(&self, msgs: &[Incoming]) {
        let unknown = self.verifier.lock().unknown_devices(msgs);
        if unknown.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let ask: Vec<String> = {
            let mut not_registered = self.not_registered.lock();
            not_registered.retain(|_, at| now.duration_since(*at) < NOT_REGISTERED_TTL);
            unknown
                .into_iter()
                .filter(|d| !not_registered.contains_key(d))
                .take(LOOKUPS_PER_BATCH)
                .collect()
        };
        for did in ask {
            match self.chain.device(&did).await {
                Ok(Some(d)) => {
                    if let Some(info) = DeviceInfo::from_record(&d) {
                        self.verifier.lock().set_device(&d.did, info);
                    }
                }
                Ok(None) => {
                    self.not_registered.lock().insert(did, now);
                }
                Err(e) => {
                    tracing::warn!("looking up device {did}: {e}");
                    return;
                }
            }
        }
    }

    /// Moves the store's write-ahead log into its database file (see [`store::checkpoint`]).
    pub async fn checkpoint(&self) -> Result<(), DbErr> {
        store::checkpoint(&self.db).await
    }

    /// Rejections so far, by device and reason.
    pub fn rejected(&self) -> BTreeMap<(String, Reject), u64> {
        self.verifier.lock().rejected().clone()
    }

    pub fn metrics(&self) -> &GatewayMetrics {
        &self.metrics
    }

    /// Per device (`-`: messages naming no registered device), what arrived since the start.
    pub fn activity(&self) -> BTreeMap<String, DeviceActivity> {
        let v = self.verifier.lock();
        let mut out: BTreeMap<String, DeviceActivity> = BTreeMap::new();
        for ((device, reason), n) in v.rejected() {
            *out.entry(device.clone())
                .or_default()
                .rejected
                .entry(reason.code())
                .or_insert(0) += n;
        }
        for (device, (n, last)) in v.accepted_all() {
            let a = out.entry(device.clone()).or_default();
            a.accepted = *n;
            a.last_accepted_ms = Some(*last);
        }
        out
    }

    /// Verifies messages and stores the accepted ones; returns when they are durable. One
    /// result per message, in order.
    pub async fn ingest(&self, msgs: &[Incoming]) -> Result<Vec<Result<(), Reject>>, DbErr> {
        let prepared = self.prepare(msgs).await;
        self.commit(msgs, prepared).await
    }

    /// The first half of [`Gateway::ingest`]: parse, look up and verify the signatures of a
    /// batch — the CPU-heavy part, which needs no counters, so it runs while the batch before
    /// is being stored. The batch must then go to [`Gateway::commit`], batches in order.
    pub async fn prepare(&self, msgs: &[Incoming]) -> Prepared {
        let started = std::time::Instant::now();
        self.look_up_unknown(msgs).await;
        let staged = self.verifier.lock().stage_batch(msgs);
        // Off the async workers: they keep receiving and storing meanwhile.
        let staged = match tokio::task::spawn_blocking(move || {
            let mut staged = staged;
            verify_staged(&mut staged);
            staged
        })
        .await
        {
            Ok(staged) => staged,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: the runtime is shutting down and drops this task with it.
            Err(_) => std::future::pending().await,
        };
        Prepared { staged, started }
    }

    /// The second half of [`Gateway::ingest`]: the clock and counter checks, then the durable
    /// store. When the store fails nothing of the batch counts, so the broker's redelivery of
    /// it passes the counter check again.
    pub async fn commit(
        &self,
        msgs: &[Incoming],
        prepared: Prepared,
    ) -> Result<Vec<Result<(), Reject>>, DbErr> {
        let (snapshot, checked) = {
            let mut v = self.verifier.lock();
            (v.snapshot(msgs), v.admit(msgs, prepared.staged))
        };
        let out = match self.store_checked(msgs, checked).await {
            Ok(out) => out,
            Err(e) => {
                self.verifier.lock().rollback(snapshot);
                return Err(e);
            }
        };
        self.metrics
            .ingest_batch_messages
            .observe(msgs.len() as f64);
        self.metrics
            .ingest_seconds
            .observe(prepared.started.elapsed().as_secs_f64());
        Ok(out)
    }

    async fn store_checked(
        &self,
        msgs: &[Incoming],
        checked: Vec<Result<crate::verify::Accepted, Reject>>,
    ) -> Result<Vec<Result<(), Reject>>, DbErr> {
        let redelivered = self.redeliveries(msgs, &checked).await?;
        let mut rows = Vec::new();
        let mut out = Vec::with_capacity(checked.len());
        for (i, (m, r)) in msgs.iter().zip(checked).enumerate() {
            if let Some(device) = redelivered.get(&i) {
                // Stored before; the broker resent it because its acknowledgement was lost.
                self.verifier.lock().forgive_replay(device);
                out.push(Ok(()));
                continue;
            }
            match r {
                Ok(a) => {
                    let binding = a
                        .binding
                        .as_ref()
                        .and_then(|b| serde_json::to_string(b).ok());
                    let (channel, measurement, uom, value, uri, read_point) = match &a.message {
                        Message::Reading(r) => (
                            "readings",
                            Some(r.measurement.clone()),
                            Some(r.uom.clone()),
                            Some(r.value),
                            None,
                            None,
                        ),
                        Message::Scan(s) => (
                            "scans",
                            None,
                            None,
                            None,
                            Some(s.uri.clone()),
                            s.read_point.clone(),
                        ),
                    };
                    rows.push(iot_reading::ActiveModel {
                        reading_key: Set(format!("{}#{}", a.message.device(), a.message.seq())),
                        device: Set(a.message.device().to_string()),
                        seq: Set(a.message.seq() as i64),
                        channel: Set(channel.into()),
                        time_ms: Set(a.message.time_ms()),
                        received_ms: Set(m.received_ms),
                        measurement: Set(measurement),
                        uom: Set(uom),
                        value: Set(value),
                        uri: Set(uri),
                        read_point: Set(read_point),
                        binding: Set(binding),
                        org: Set(a.org.clone()),
                        envelope: Set(String::from_utf8_lossy(&a.envelope).into_owned()),
                        batch_id: Set(None),
                        ..Default::default()
                    });
                    self.metrics.accept(channel);
                    out.push(Ok(()));
                }
                Err(e) => {
                    self.metrics.reject(e.code());
                    out.push(Err(e));
                }
            }
        }
        let stored = rows.len() as i64;
        // Stored whole or not at all, with one sync to disk. A batch that fits in one statement
        // goes without BEGIN and COMMIT, since one statement is one transaction: each request
        // to the database costs a hand-over to its thread, which on a busy machine takes as
        // long as the insert itself.
        if rows.len() <= ROWS_PER_STATEMENT && !rows.is_empty() {
            iot_reading::Entity::insert_many(rows)
                .exec_without_returning(&self.writer)
                .await?;
        } else if !rows.is_empty() {
            let txn = self.writer.begin().await?;
            let mut rest = rows;
            while !rest.is_empty() {
                let chunk: Vec<iot_reading::ActiveModel> =
                    rest.drain(..rest.len().min(ROWS_PER_STATEMENT)).collect();
                iot_reading::Entity::insert_many(chunk)
                    .exec_without_returning(&txn)
                    .await?;
            }
            txn.commit().await?;
        }
        // A redelivered message is counted again here but stored once; the gauge is reset from
        // the store at the next start.
        self.metrics.outbox.inc_by(stored);
        Ok(out)
    }

    /// Which messages refused as replays are broker resends of stored ones, byte for byte (by
    /// position, with their device): redeliveries after a crash or reconnect, not attacks.
    async fn redeliveries(
        &self,
        msgs: &[Incoming],
        checked: &[Result<crate::verify::Accepted, Reject>],
    ) -> Result<BTreeMap<usize, String>, DbErr> {
        let mut keys: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for (i, r) in checked.iter().enumerate() {
            // Only what the broker flags as a resend: a copy sent again by anyone else is a
            // replay, even byte for byte.
            if !(msgs[i].redelivered && matches!(r, Err(Reject::Replay))) {
                continue;
            }
            let Some((_, _, channel)) = crate::payload::parse_topic(&msgs[i].topic) else {
                continue;
            };
            if let Ok(s) = crate::payload::parse(&msgs[i].payload, channel, self.sig) {
                let device = s.message.device().to_string();
                keys.insert(format!("{device}#{}", s.message.seq()), (i, device));
            }
        }
        if keys.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut stored = self.stored_envelopes(keys.keys().cloned(), true).await?;
        stored.extend(self.stored_envelopes(keys.keys().cloned(), false).await?);
        Ok(stored
            .into_iter()
            .filter_map(|(key, envelope)| {
                let (i, device) = keys.get(&key)?;
                (envelope.as_bytes() == msgs[*i].payload.as_slice()).then(|| (*i, device.clone()))
            })
            .collect())
    }

    /// `(reading_key, envelope)` of the stored messages among `keys`, in closed batches
    /// (through the partial index on `reading_key`) or not yet batched (a scan of the few
    /// unbatched rows, through the `batch_id` index).
    async fn stored_envelopes(
        &self,
        keys: impl IntoIterator<Item = String>,
        batched: bool,
    ) -> Result<Vec<(String, String)>, DbErr> {
        let batch = if batched {
            iot_reading::Column::BatchId.is_not_null()
        } else {
            iot_reading::Column::BatchId.is_null()
        };
        iot_reading::Entity::find()
            .select_only()
            .column(iot_reading::Column::ReadingKey)
            .column(iot_reading::Column::Envelope)
            .filter(batch)
            .filter(iot_reading::Column::ReadingKey.is_in(keys))
            .into_tuple()
            .all(&self.db)
            .await
    }

    /// Closes a batch from the oldest unbatched messages, when there are enough of them or the
    /// oldest has waited long enough (`force` closes whatever there is).
    pub async fn close_batch(&self, force: bool) -> Result<Option<String>, DbErr> {
        // Decide from the oldest unbatched message alone; the rows themselves (envelopes) are
        // read only for a batch that closes — this runs several times a second.
        let oldest: Option<(i64, i64)> = iot_reading::Entity::find()
            .select_only()
            .column(iot_reading::Column::Id)
            .column(iot_reading::Column::ReceivedMs)
            .filter(iot_reading::Column::BatchId.is_null())
            .order_by_asc(iot_reading::Column::Id)
            .into_tuple()
            .one(&self.db)
            .await?;
        let Some((first_id, first_received_ms)) = oldest else {
            return Ok(None);
        };
        let waited = now_ms() as i64 - first_received_ms;
        if !force && waited < self.cfg.batch_wait.as_millis() as i64 {
            let full: Option<i64> = iot_reading::Entity::find()
                .select_only()
                .column(iot_reading::Column::Id)
                .filter(iot_reading::Column::BatchId.is_null())
                .order_by_asc(iot_reading::Column::Id)
                .offset(self.cfg.batch_max.saturating_sub(1) as u64)
                .into_tuple()
                .one(&self.db)
                .await?;
            if full.is_none() {
                return Ok(None);
            }
        }
        let rows: Vec<(i64, i64, String)> = iot_reading::Entity::find()
            .select_only()
            .column(iot_reading::Column::Id)
            .column(iot_reading::Column::TimeMs)
            .column(iot_reading::Column::Envelope)
            .filter(iot_reading::Column::BatchId.is_null())
            .order_by_asc(iot_reading::Column::Id)
            .limit(self.cfg.batch_max as u64)
            .into_tuple()
            .all(&self.db)
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let id = format!("{}-{:012}", self.cfg.id, first_id);
        let last_id = rows.last().map_or(first_id, |r| r.0);
        let batch = Batch {
            id: id.clone(),
            first_ms: rows.iter().map(|r| r.1).min().unwrap_or(0),
            last_ms: rows.iter().map(|r| r.1).max().unwrap_or(0),
            envelopes: rows.into_iter().map(|r| r.2.into_bytes()).collect(),
        };
        let count = batch.envelopes.len();
        let txn = self.writer.begin().await?;
        iot_batch::Entity::insert(iot_batch::ActiveModel {
            id: Set(id.clone()),
            root: Set(batch.root(self.hash).to_hex()),
            count: Set(count as i32),
            first_ms: Set(batch.first_ms),
            last_ms: Set(batch.last_ms),
            status: Set("pending".into()),
            tx_id: Set(None),
            height: Set(None),
            created_ms: Set(now_ms() as i64),
            anchored_ms: Set(None),
        })
        .exec_without_returning(&txn)
        .await?;
        // The batch is the oldest unbatched rows up to the last one taken; a message's leaf is
        // its position by arrival (`id`) within the batch.
        iot_reading::Entity::update_many()
            .col_expr(iot_reading::Column::BatchId, Expr::value(id.clone()))
            .filter(iot_reading::Column::BatchId.is_null())
            .filter(iot_reading::Column::Id.lte(last_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(Some(id))
    }

    /// A batch's messages in leaf order.
    async fn batch_rows(&self, id: &str) -> Result<Vec<iot_reading::Model>, DbErr> {
        iot_reading::Entity::find()
            .filter(iot_reading::Column::BatchId.eq(id))
            .order_by_asc(iot_reading::Column::Id)
            .all(&self.db)
            .await
    }

    fn batch_of(id: &str, rows: &[iot_reading::Model]) -> Batch {
        Batch {
            id: id.to_string(),
            first_ms: rows.iter().map(|r| r.time_ms).min().unwrap_or(0),
            last_ms: rows.iter().map(|r| r.time_ms).max().unwrap_or(0),
            envelopes: rows
                .iter()
                .map(|r| r.envelope.clone().into_bytes())
                .collect(),
        }
    }

    /// Anchors every pending batch, oldest first; returns how many got anchored. A batch the
    /// node cannot take now (unreachable, pool full) stays pending for the next round.
    pub async fn anchor_pending(&self) -> Result<usize, String> {
        let r = self.anchor_pending_inner().await;
        if r.is_err() {
            self.metrics.anchor_failures.inc();
        }
        r
    }

    async fn anchor_pending_inner(&self) -> Result<usize, String> {
        let pending = iot_batch::Entity::find()
            .filter(iot_batch::Column::Status.eq("pending"))
            .order_by_asc(iot_batch::Column::CreatedMs)
            .all(&self.db)
            .await
            .map_err(|e| e.to_string())?;
        let mut done = 0;
        for b in pending {
            let rows = self.batch_rows(&b.id).await.map_err(|e| e.to_string())?;
            let batch = Self::batch_of(&b.id, &rows);
            let c = self
                .chain
                .call(
                    contract::NAME,
                    "anchor_batch",
                    &batch.anchor_args(self.hash),
                )
                .await?;
            // `batch_exists`: anchored before a crash; the chain holds it once.
            if !(c.code.is_empty() || c.code == "batch_exists") {
                return Err(format!("anchoring {}: {}: {}", b.id, c.code, c.message));
            }
            let anchored_ms = now_ms() as i64;
            self.report_lots(&rows).await?;
            self.capture_scans(&b.id, &rows).await?;
            let mut m: iot_batch::ActiveModel = b.into();
            m.status = Set("anchored".into());
            m.anchored_ms = Set(Some(anchored_ms));
            if c.code.is_empty() {
                m.tx_id = Set(Some(c.tx_id));
                m.height = Set(Some(c.height as i64));
            }
            iot_batch::Entity::update(m)
                .exec(&self.writer)
                .await
                .map_err(|e| e.to_string())?;
            self.metrics.batches_anchored.inc();
            self.metrics.messages_anchored.inc_by(rows.len() as u64);
            self.metrics.outbox.dec_by(rows.len() as i64);
            for r in &rows {
                self.metrics
                    .arrival_to_anchor_seconds
                    .observe((anchored_ms - r.received_ms).max(0) as f64 / 1000.0);
            }
            done += 1;
        }
        Ok(done)
    }

    /// Readings of devices bound to a lot go to the lot's cold-chain rule (`trace.sensor_report`).
    async fn report_lots(&self, rows: &[iot_reading::Model]) -> Result<(), String> {
        let mut by_lot: BTreeMap<(String, String, String), Vec<Value>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.channel == "readings") {
            let Some(Binding::Lot { gtin, lot }) = r
                .binding
                .as_deref()
                .and_then(|b| serde_json::from_str::<Binding>(b).ok())
            else {
                continue;
            };
            let (Some(m), Some(u), Some(v)) = (r.measurement.as_deref(), r.uom.as_deref(), r.value)
            else {
                continue;
            };
            let reading = match (m, u) {
                ("Temperature", "CEL") => json!({"time_ms": r.time_ms.max(0), "temperature_c": v}),
                ("Temperature", "FAH") => {
                    json!({"time_ms": r.time_ms.max(0), "temperature_c": (v - 32.0) * 5.0 / 9.0})
                }
                ("Temperature", "KEL") => {
                    json!({"time_ms": r.time_ms.max(0), "temperature_c": v - 273.15})
                }
                ("RelativeHumidity", "P1") => {
                    json!({"time_ms": r.time_ms.max(0), "humidity_pct": v})
                }
                _ => continue,
            };
            by_lot
                .entry((gtin, lot, r.device.clone()))
                .or_default()
                .push(reading);
        }
        for ((gtin, lot, device), readings) in by_lot {
            for chunk in readings.chunks(2_000) {
                let args = json!({"gtin": gtin, "lot": lot, "device": device, "readings": chunk});
                let c = self.chain.call("trace", "sensor_report", &args).await?;
                if !c.code.is_empty() {
                    // The readings stay anchored and provable; the rule refused them (e.g. an
                    // unknown lot). Nothing to retry.
                    tracing::warn!(%gtin, %lot, code = %c.code, "sensor report refused: {}", c.message);
                }
            }
        }
        Ok(())
    }

    /// Scans become EPCIS 2.0 ObjectEvents (action OBSERVE at the scanner's read point),
    /// captured on chain by the gateway (`trace.capture`).
    async fn capture_scans(
        &self,
        batch_id: &str,
        rows: &[iot_reading::Model],
    ) -> Result<(), String> {
        let scans: Vec<&iot_reading::Model> =
            rows.iter().filter(|r| r.channel == "scans").collect();
        if scans.is_empty() {
            return Ok(());
        }
        let events: Vec<String> = scans
            .iter()
            .filter_map(|r| {
                let uri = r.uri.as_deref()?;
                let gln = r.read_point.clone().or_else(|| {
                    match r
                        .binding
                        .as_deref()
                        .and_then(|b| serde_json::from_str::<Binding>(b).ok())
                    {
                        Some(Binding::Location { gln }) => Some(gln),
                        _ => None,
                    }
                });
                let time = chrono::DateTime::from_timestamp_millis(r.time_ms)?
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let mut e = json!({
                    "type": "ObjectEvent",
                    "eventTime": time,
                    "eventTimeZoneOffset": "+00:00",
                    "action": "OBSERVE",
                    "epcList": [uri],
                    "bizStep": "inspecting",
                });
                if let Some(g) = gln {
                    e["readPoint"] = json!({"id": format!("https://id.gs1.org/414/{g}")});
                }
                Some(e.to_string())
            })
            .collect();
        let args = json!({
            "capture_id": format!("{batch_id}-scans"),
            "context": "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld",
            "events": events,
        });
        let c = self.chain.call("trace", "capture", &args).await?;
        if !c.code.is_empty() {
            tracing::warn!(batch = %batch_id, code = %c.code, "scan events refused: {}", c.message);
        }
        Ok(())
    }

    /// The proof of a stored message (`{did}#{seq}`), once its batch is closed.
    pub async fn proof(&self, reading_key: &str) -> Result<Option<ReadingProof>, DbErr> {
        // Only messages of closed batches have proofs, and only they are indexed by key.
        let Some(r) = iot_reading::Entity::find()
            .filter(iot_reading::Column::BatchId.is_not_null())
            .filter(iot_reading::Column::ReadingKey.eq(reading_key))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let Some(batch_id) = r.batch_id else {
            return Ok(None);
        };
        let rows = self.batch_rows(&batch_id).await?;
        let Some(leaf) = rows.iter().position(|m| m.id == r.id) else {
            return Ok(None);
        };
        Ok(Self::batch_of(&batch_id, &rows).proof(self.hash, leaf))
    }

    /// Batches by status, for the device page and metrics.
    pub async fn batch_status(&self, id: &str) -> Result<Option<iot_batch::Model>, DbErr> {
        iot_batch::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await
    }
}
