//! The node: admission into the mempool, block proposal and commit, queries and proofs.
//! It is the "application" side of the consensus boundary (see `consensus`): an engine asks it
//! to propose, to check a proposal, and to commit a decided block with its certificate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::contract::{BlockInfo, ContractRegistry, state_key};
use crate::crypto::{Digest, HashAlg, PublicKey, Suite, VerifyItem, verify_batch};
use crate::execution::{self, ExecError, Mode, nonce_key};
use crate::genesis::Genesis;
use crate::mempool::{InsertError, Mempool, MempoolLimits};
use crate::merkle;
use crate::metrics::Metrics;
use crate::proof::{Claim, FORMAT, ProofBundle};
use crate::state::{CommittedView, PreparedState, StateError, StateStore};
use crate::storage::{BlockWrite, EventRow, StorageError, Store, TxRow};
use crate::system::{self, KeyRecord, Member, Status};
use crate::types::{
    BlockHeader, CommitCertificate, Event, Receipt, SignedTx, TxStatus, ValidatorSet,
};

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub max_tx_bytes: usize,
    /// Most transactions per block. Larger blocks share more tree nodes per transaction but
    /// hold more memory while they execute and are written (two are in flight at once).
    pub max_block_txs: usize,
    pub max_block_bytes: usize,
    /// How far in the future a transaction's expiry may be.
    pub max_expiry_ms: u64,
    /// How far ahead of this node's clock another proposer's block time may be.
    pub max_clock_drift_ms: u64,
    pub mempool: MempoolLimits,
    /// Most submissions verified and persisted together by the admission worker.
    pub admission_batch: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            max_tx_bytes: 64 * 1024,
            max_block_txs: 10_000,
            max_block_bytes: 32 * 1024 * 1024,
            max_expiry_ms: 3600 * 1000,
            max_clock_drift_ms: 10_000,
            mempool: MempoolLimits::default(),
            admission_batch: 2048,
        }
    }
}

/// A rejected submission: stable code, human message, HTTP-ish class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{code}: {message}")]
pub struct AdmitError {
    pub code: &'static str,
    pub message: String,
    /// Seconds after which a retry may succeed (pool full).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

impl AdmitError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("{0}")]
    Invalid(String),
    #[error("internal: {0}")]
    Internal(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Tip {
    pub height: u64,
    pub hash: Digest,
    pub time_ms: u64,
}

/// Outcome of a transaction once it left the pool.
#[derive(Debug, Clone, Serialize)]
pub struct TxOutcome {
    pub tx_id: Digest,
    pub height: u64,
    pub index: u32,
    pub receipt: Receipt,
}

/// Published to subscribers (SSE) after each commit.
#[derive(Debug, Clone, Serialize)]
pub struct CommittedBlock {
    pub height: u64,
    pub hash: Digest,
    pub time_ms: u64,
    pub tx_count: usize,
    pub proposer: String,
    /// (tx id, event) for every event of the block, in order.
    pub events: Vec<(Digest, Event)>,
}

/// A proposal built by this node, kept until the engine commits it.
pub struct Proposed {
    pub header: BlockHeader,
    pub txs: Vec<SignedTx>,
}

struct Prepared {
    header: BlockHeader,
    txs: Vec<SignedTx>,
    receipts: Vec<Receipt>,
    state: PreparedState,
}

/// Resolved when a transaction is committed or dropped from the pool.
type CommitWaiter = oneshot::Sender<Result<TxOutcome, AdmitError>>;

struct AdmitJob {
    tx: SignedTx,
    committed_nonce: u64,
    /// The pending-pool row of a transaction restored after a restart (already durable).
    restored_seq: Option<i64>,
    /// Relay to peer nodes once admitted (submissions from clients, not from peers).
    relay: bool,
    reply: oneshot::Sender<Result<(), AdmitError>>,
}

pub struct ChainInfo {
    pub chain_id: String,
    pub suite: Suite,
    pub genesis_hash: Digest,
    pub genesis: Genesis,
}

pub struct Node {
    pub cfg: NodeConfig,
    pub info: ChainInfo,
    pub store: Store,
    pub state: Arc<StateStore>,
    pub registry: Arc<ContractRegistry>,
    pub mempool: Mempool,
    pub metrics: Metrics,
    /// Latest persisted block.
    tip: RwLock<Tip>,
    /// Latest decided block (equal to `tip`, or one ahead while it is being persisted).
    head: RwLock<Tip>,
    persisting: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    events: broadcast::Sender<Arc<CommittedBlock>>,
    waiters: Mutex<HashMap<Digest, Vec<CommitWaiter>>>,
    admit_tx: mpsc::Sender<AdmitJob>,
    /// Pending-pool row of every transaction in the mempool, so committed ones can be removed
    /// by their (clustered) row number.
    pending_rows: Mutex<HashMap<Digest, i64>>,
    next_pending_seq: std::sync::atomic::AtomicI64,
    /// Raw transactions admitted from clients, for relaying to peer nodes.
    admitted: broadcast::Sender<Arc<Vec<Vec<u8>>>>,
    /// Transactions reloaded from the pending pool at start, for the relay to send to peers
    /// again: peers keep relayed transactions in memory only.
    restored: Mutex<Vec<Vec<u8>>>,
    new_tx: tokio::sync::Notify,
    /// Executed blocks not yet decided (own proposals and validated ones), by block hash.
    prepared: Mutex<HashMap<Digest, Prepared>>,
    /// Serialises proposal and commit: one block at a time.
    block_lock: tokio::sync::Mutex<()>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn genesis_meta_key() -> &'static str {
    "genesis"
}

impl Node {
    /// Open (or create from `genesis`) the chain in `store`, and start the admission worker.
    pub async fn open(
        store: Store,
        genesis: Genesis,
        registry: ContractRegistry,
        cfg: NodeConfig,
    ) -> Result<Arc<Self>, NodeError> {
        if cfg.max_block_txs == 0 || cfg.max_block_txs > crate::storage::MAX_BLOCK_TXS {
            return Err(NodeError::Invalid(format!(
                "max_block_txs must be between 1 and {}",
                crate::storage::MAX_BLOCK_TXS
            )));
        }
        genesis
            .validate()
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        let suite = genesis.suite;
        let hash = suite.hash();
        let registry = Arc::new(registry);
        let genesis_json =
            serde_json::to_vec(&genesis).map_err(|e| NodeError::Internal(e.to_string()))?;
        let (g_writes, mut g_header) = genesis
            .build(&registry)
            .map_err(|e| NodeError::Invalid(e.to_string()))?;

        let handle = tokio::runtime::Handle::current();
        let tip_row = store.tip().await?;
        let state = Arc::new(StateStore::new(
            store.clone(),
            suite,
            handle,
            tip_row.as_ref().map(|b| b.height as u64),
        ));
        state.load_key_filter().await?;

        let tip = match tip_row {
            Some(row) => {
                // The stored genesis must be the one we were given: a node never silently
                // switches chains.
                let stored = store.block_by_height(0).await?.ok_or_else(|| {
                    NodeError::Invalid("database has blocks but no genesis block".into())
                })?;
                let st = state.clone();
                let root = tokio::task::spawn_blocking(move || st.prepare(0, g_writes))
                    .await
                    .map_err(|e| NodeError::Internal(e.to_string()))??
                    .root;
                g_header.state_root = root;
                if stored.hash != g_header.hash().bytes.to_vec() {
                    return Err(NodeError::Invalid(
                        "the database holds a different chain than this genesis describes".into(),
                    ));
                }
                let header = BlockHeader::decode(&row.header)
                    .map_err(|e| NodeError::Internal(format!("stored header: {e}")))?;
                Tip {
                    height: header.height,
                    hash: header.hash(),
                    time_ms: header.time_ms,
                }
            }
            None => {
                let st = state.clone();
                let prepared = tokio::task::spawn_blocking(move || st.prepare(0, g_writes))
                    .await
                    .map_err(|e| NodeError::Internal(e.to_string()))??;
                g_header.state_root = prepared.root;
                let (new_keys, values, nodes) = state.rows(&prepared)?;
                let set = genesis
                    .validator_set()
                    .map_err(|e| NodeError::Invalid(e.to_string()))?;
                store.put_meta(genesis_meta_key(), &genesis_json).await?;
                store
                    .commit_block(&BlockWrite {
                        height: 0,
                        hash: g_header.hash().bytes.to_vec(),
                        header: g_header.encode(),
                        commit: CommitCertificate {
                            height: 0,
                            round: 0,
                            block_hash: g_header.hash(),
                            signatures: vec![],
                        }
                        .encode(),
                        validator_set: set.encode(),
                        time_ms: g_header.time_ms,
                        txs: vec![],
                        events: vec![],
                        new_keys,
                        values,
                        nodes,
                    })
                    .await?;
                state.mark_committed(prepared);
                Tip {
                    height: 0,
                    hash: g_header.hash(),
                    time_ms: g_header.time_ms,
                }
            }
        };
        let genesis_hash = if tip.height == 0 {
            tip.hash
        } else {
            let g = store
                .block_by_height(0)
                .await?
                .ok_or_else(|| NodeError::Internal("genesis block missing".into()))?;
            Digest::from_hex(hash, &hex::encode(&g.hash))
                .map_err(|e| NodeError::Internal(e.to_string()))?
        };

        let (admit_tx, admit_rx) = mpsc::channel(cfg.admission_batch * 4);
        // The channel keeps its last N messages alive even when nobody lags, and a block's
        // message carries all its events: keep N small. A subscriber that falls further behind
        // gets `Lagged` and resynchronises through the REST API.
        let (events, _) = broadcast::channel(16);
        let next_pending_seq = store.pending_max_seq().await?.map_or(1, |s| s + 1);
        let node = Arc::new(Self {
            mempool: Mempool::new(cfg.mempool.clone()),
            cfg,
            info: ChainInfo {
                chain_id: genesis.chain_id.clone(),
                suite,
                genesis_hash,
                genesis,
            },
            store,
            state,
            registry,
            metrics: Metrics::new(),
            head: RwLock::new(tip.clone()),
            persisting: tokio::sync::Mutex::new(None),
            tip: RwLock::new(tip),
            events,
            waiters: Mutex::new(HashMap::new()),
            admit_tx,
            pending_rows: Mutex::new(HashMap::new()),
            next_pending_seq: std::sync::atomic::AtomicI64::new(next_pending_seq),
            admitted: broadcast::channel(64).0,
            restored: Mutex::new(Vec::new()),
            new_tx: tokio::sync::Notify::new(),
            prepared: Mutex::new(HashMap::new()),
            block_lock: tokio::sync::Mutex::new(()),
        });
        node.metrics.height.set(node.tip().height as i64);
        tokio::spawn(admission_worker(Arc::downgrade(&node), admit_rx));
        node.reload_pending().await?;
        Ok(node)
    }

    /// Forget the pending-pool rows of these transactions and return them for deletion.
    fn take_pending_rows<'a>(&self, ids: impl Iterator<Item = &'a Digest>) -> Vec<i64> {
        let mut rows = self.pending_rows.lock();
        let mut out: Vec<i64> = ids.filter_map(|id| rows.remove(id)).collect();
        out.sort_unstable();
        out
    }

    pub fn hash_alg(&self) -> HashAlg {
        self.info.suite.hash()
    }

    /// Latest persisted block: what queries and proofs can see.
    pub fn tip(&self) -> Tip {
        self.tip.read().clone()
    }

    /// Latest decided block: what the next proposal builds on.
    pub fn head(&self) -> Tip {
        self.head.read().clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CommittedBlock>> {
        self.events.subscribe()
    }

    /// Resolves when a new transaction entered the pool (block producers wait on it).
    pub async fn tx_arrived(&self) {
        self.new_tx.notified().await
    }

    /// Re-admit transactions that were acknowledged before a restart.
    async fn reload_pending(self: &Arc<Self>) -> Result<(), NodeError> {
        let rows = self.store.pending_all().await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut stale = Vec::new();
        let mut kept = 0usize;
        let mut restored = Vec::new();
        for row in rows {
            let outcome = match SignedTx::decode(&row.raw, self.hash_alg()) {
                Ok(tx) => {
                    self.check_and_admit(tx, now_ms(), Some(row.seq), false)
                        .await
                }
                Err(e) => Err(AdmitError::new("malformed", e.to_string())),
            };
            match outcome {
                Ok(()) => {
                    kept += 1;
                    restored.push(row.raw);
                }
                Err(e) if e.code == "duplicate" => {
                    // Committed just before the restart; its row was not cleared yet.
                    stale.push(row.seq);
                }
                Err(e) => {
                    // An acknowledged transaction that can no longer be committed.
                    tracing::warn!(code = e.code, message = %e.message, seq = row.seq, "dropping pending transaction after restart");
                    stale.push(row.seq);
                }
            }
        }
        self.store.pending_delete(&stale).await?;
        tracing::info!(kept, dropped = stale.len(), "reloaded pending transactions");
        *self.restored.lock() = restored;
        Ok(())
    }

    /// The transactions reloaded from the pending pool at start (once): the relay sends them
    /// to peers again, since a peer that restarted meanwhile lost its copy.
    pub fn take_restored(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.restored.lock())
    }

    // ---------------------------------------------------------------- admission

    /// Check and admit a signed transaction. With `wait`, resolves when it is committed
    /// (or dropped) instead of at admission.
    pub async fn submit(
        self: &Arc<Self>,
        raw: &[u8],
        wait: Option<Duration>,
    ) -> Result<Submitted, AdmitError> {
        let res = self.submit_inner(raw, wait, true).await;
        match &res {
            Ok(_) => {
                self.metrics.txs_admitted.inc();
            }
            Err(e) => self.metrics.reject(e.code),
        }
        res
    }

    /// Admit a transaction relayed by a peer node (it is not relayed again).
    pub async fn submit_relayed(self: &Arc<Self>, raw: &[u8]) -> Result<Submitted, AdmitError> {
        let res = self.submit_inner(raw, None, false).await;
        if let Err(e) = &res {
            self.metrics.reject(e.code);
        }
        res
    }

    /// Transactions admitted from clients, in batches, for relaying to peers.
    pub fn subscribe_admitted(&self) -> broadcast::Receiver<Arc<Vec<Vec<u8>>>> {
        self.admitted.subscribe()
    }

    async fn submit_inner(
        self: &Arc<Self>,
        raw: &[u8],
        wait: Option<Duration>,
        relay: bool,
    ) -> Result<Submitted, AdmitError> {
        if raw.len() > self.cfg.max_tx_bytes {
            return Err(AdmitError::new(
                "oversized",
                format!(
                    "transaction is {} bytes; the limit is {}",
                    raw.len(),
                    self.cfg.max_tx_bytes
                ),
            ));
        }
        let tx = SignedTx::decode(raw, self.hash_alg())
            .map_err(|e| AdmitError::new("malformed", e.to_string()))?;
        let id = tx.id();
        let waiter = wait.map(|_| {
            let (s, r) = oneshot::channel();
            self.waiters.lock().entry(id).or_default().push(s);
            r
        });
        if let Err(e) = self.check_and_admit(tx, now_ms(), None, relay).await {
            // Only this caller's waiter goes: another caller may be waiting for the same id.
            if let Some(rx) = waiter {
                drop(rx);
                self.prune_waiters(&id);
            }
            return Err(e);
        }
        match (waiter, wait) {
            (Some(rx), Some(d)) => match tokio::time::timeout(d, rx).await {
                Ok(Ok(Ok(outcome))) => Ok(Submitted::Committed(outcome)),
                Ok(Ok(Err(e))) => Err(e),
                _ => {
                    self.prune_waiters(&id);
                    Ok(Submitted::Pending(id))
                }
            },
            _ => Ok(Submitted::Pending(id)),
        }
    }

    /// Forget waiters whose caller has gone (rejected or timed out).
    fn prune_waiters(&self, id: &Digest) {
        let mut w = self.waiters.lock();
        if let Some(list) = w.get_mut(id) {
            list.retain(|s| !s.is_closed());
            if list.is_empty() {
                w.remove(id);
            }
        }
    }

    async fn check_and_admit(
        self: &Arc<Self>,
        tx: SignedTx,
        now: u64,
        restored_seq: Option<i64>,
        relay: bool,
    ) -> Result<(), AdmitError> {
        let b = &tx.body;
        if b.chain_id != self.info.chain_id {
            return Err(AdmitError::new(
                "wrong_chain",
                format!(
                    "transaction is for chain `{}`, this is `{}`",
                    b.chain_id, self.info.chain_id
                ),
            ));
        }
        if b.sender.alg() != self.info.suite.sig() || tx.signature.alg != self.info.suite.sig() {
            return Err(AdmitError::new(
                "wrong_suite",
                format!("this chain uses the {} suite", self.info.suite),
            ));
        }
        if b.expiry_ms < now {
            return Err(AdmitError::new(
                "expired",
                format!("expired at {} (now {now})", b.expiry_ms),
            ));
        }
        if b.expiry_ms > now.saturating_add(self.cfg.max_expiry_ms) {
            return Err(AdmitError::new(
                "expiry_too_far",
                format!("expiry may be at most {} ms ahead", self.cfg.max_expiry_ms),
            ));
        }
        self.registry
            .knows_method(&b.contract, &b.method)
            .map_err(|(code, msg)| AdmitError::new(code, msg))?;
        let internal = |e: StateError| AdmitError::new("internal", e.to_string());
        let key_rec: Option<KeyRecord> = self
            .read_json(state_key(
                system::NAME,
                format!("key/{}", b.sender).as_bytes(),
            ))
            .await
            .map_err(internal)?;
        match key_rec {
            None => {
                return Err(AdmitError::new(
                    "not_permitted",
                    "the sender key is not registered to any member of the consortium",
                ));
            }
            Some(r) if r.status != Status::Active => {
                return Err(AdmitError::new(
                    "not_permitted",
                    format!(
                        "the sender key was {:?} at height {}",
                        r.status, r.since_height
                    )
                    .to_lowercase(),
                ));
            }
            Some(_) => {}
        }
        let committed_nonce: u64 = self
            .read_json(nonce_key(&b.sender))
            .await
            .map_err(internal)?
            .unwrap_or(0);
        if b.nonce < committed_nonce {
            let committed = self
                .store
                .tx(&tx.id().bytes)
                .await
                .map_err(|e| AdmitError::new("internal", e.to_string()))?
                .is_some();
            return Err(if committed {
                AdmitError::new("duplicate", "this transaction is already committed")
            } else {
                AdmitError::new(
                    "stale_nonce",
                    format!(
                        "nonce {} was already used; the account's next nonce is {committed_nonce}",
                        b.nonce
                    ),
                )
            });
        }
        if b.nonce > committed_nonce + self.cfg.mempool.max_nonce_gap {
            return Err(AdmitError::new(
                "future_nonce",
                format!(
                    "nonce {} is too far ahead of the account's next nonce {committed_nonce} (max gap {})",
                    b.nonce, self.cfg.mempool.max_nonce_gap
                ),
            ));
        }
        if self.mempool.contains(&tx.id()) {
            return Err(AdmitError::new(
                "duplicate",
                "this transaction is already pending",
            ));
        }
        if restored_seq.is_none() && !self.mempool.has_room(tx.bytes().len()) {
            return Err(AdmitError {
                code: "mempool_full",
                message: "the node is at capacity; retry shortly".into(),
                retry_after_s: Some(1),
            });
        }
        let (reply, rx) = oneshot::channel();
        self.admit_tx
            .send(AdmitJob {
                tx,
                committed_nonce,
                restored_seq,
                relay,
                reply,
            })
            .await
            .map_err(|_| AdmitError::new("unavailable", "the node is shutting down"))?;
        rx.await
            .map_err(|_| AdmitError::new("unavailable", "the node is shutting down"))?
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        full_key: Vec<u8>,
    ) -> Result<Option<T>, StateError> {
        match self.state.get_latest(full_key).await? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StateError::Tree(format!("corrupt state value: {e}"))),
        }
    }

    // ---------------------------------------------------------------- blocks

    /// Build the next block from the pool (at most one proposal is kept at a time).
    pub async fn propose(
        self: &Arc<Self>,
        time_ms: u64,
        proposer: &PublicKey,
    ) -> Result<Proposed, NodeError> {
        let _guard = self.block_lock.lock().await;
        let tip = self.head();
        let txs = self
            .mempool
            .reap(self.cfg.max_block_txs, self.cfg.max_block_bytes);
        let time_ms = time_ms.max(tip.time_ms + 1);
        let block = BlockInfo {
            chain_id: self.info.chain_id.clone(),
            height: tip.height + 1,
            time_ms,
            prev_hash: tip.hash,
        };
        let prepared = self
            .execute(block, txs, Mode::Propose, proposer.clone())
            .await?;
        let (prepared, dropped) = prepared;
        if !dropped.is_empty() {
            let ids: Vec<Digest> = dropped.iter().map(|(t, _)| t.id()).collect();
            self.mempool.remove(&ids);
            let rows = self.take_pending_rows(ids.iter());
            self.store.pending_delete(&rows).await?;
            let mut w = self.waiters.lock();
            for (tx, reason) in dropped {
                for s in w.remove(&tx.id()).unwrap_or_default() {
                    let _ = s.send(Err(AdmitError::new("dropped", reason.clone())));
                }
            }
        }
        let out = Proposed {
            header: prepared.header.clone(),
            txs: prepared.txs.clone(),
        };
        self.keep_prepared(prepared);
        Ok(out)
    }

    /// Execute a block proposed elsewhere on top of the head; it must give exactly its header.
    async fn reexecute(
        self: &Arc<Self>,
        header: &BlockHeader,
        txs: Vec<SignedTx>,
    ) -> Result<Prepared, NodeError> {
        let block = BlockInfo {
            chain_id: header.chain_id.clone(),
            height: header.height,
            time_ms: header.time_ms,
            prev_hash: header.prev_hash,
        };
        let (p, _) = self
            .execute(block, txs, Mode::Verify, header.proposer.clone())
            .await?;
        if &p.header != header {
            return Err(NodeError::Invalid(
                "re-execution gives different roots".into(),
            ));
        }
        Ok(p)
    }

    /// Keep an executed block for its commit (a few per height at most: one per round).
    fn keep_prepared(&self, p: Prepared) {
        let mut map = self.prepared.lock();
        if map.len() >= 16 {
            map.clear();
        }
        map.insert(p.header.hash(), p);
    }

    /// Validate a block proposed by another validator: it extends the head, its time is sane,
    /// every transaction is signed, and executing it gives exactly its header.
    pub async fn validate_proposal(
        self: &Arc<Self>,
        header: &BlockHeader,
        txs: Vec<SignedTx>,
    ) -> Result<(), NodeError> {
        let _guard = self.block_lock.lock().await;
        let head = self.head();
        let invalid = |m: String| Err(NodeError::Invalid(m));
        if header.chain_id != self.info.chain_id {
            return invalid("block of another chain".into());
        }
        if header.height != head.height + 1 || header.prev_hash != head.hash {
            return invalid(format!(
                "block {} does not extend the head {}",
                header.height, head.height
            ));
        }
        if header.time_ms <= head.time_ms {
            return invalid("block time does not advance".into());
        }
        if header.time_ms > now_ms() + self.cfg.max_clock_drift_ms {
            return invalid("block time is too far in the future".into());
        }
        if txs.len() > self.cfg.max_block_txs {
            return invalid("too many transactions".into());
        }
        let bytes: usize = txs.iter().map(|t| t.bytes().len()).sum();
        if bytes > self.cfg.max_block_bytes {
            return invalid("block too large".into());
        }
        let suite = self.info.suite.sig();
        if txs
            .iter()
            .any(|t| t.body.sender.alg() != suite || t.signature.alg != suite)
        {
            return invalid("transaction of the wrong crypto suite".into());
        }
        let checked = {
            // Transactions already in this node's pool passed the same signature check at
            // admission (the id covers the signature), so only the others are verified.
            let txs: Vec<(usize, SignedTx)> = txs
                .iter()
                .enumerate()
                .filter(|(_, t)| !self.mempool.contains(&t.id()))
                .map(|(i, t)| (i, t.clone()))
                .collect();
            tokio::task::spawn_blocking(move || {
                let msgs: Vec<Vec<u8>> = txs.iter().map(|(_, t)| t.signing_message()).collect();
                let items: Vec<VerifyItem> = txs
                    .iter()
                    .zip(&msgs)
                    .map(|((_, t), m)| VerifyItem {
                        key: &t.body.sender,
                        msg: m,
                        sig: &t.signature,
                    })
                    .collect();
                verify_batch(&items)
                    .iter()
                    .position(|r| r.is_err())
                    .map(|k| txs[k].0)
            })
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))?
        };
        if let Some(i) = checked {
            return invalid(format!("transaction {i} has a bad signature"));
        }
        let p = self.reexecute(header, txs).await?;
        self.keep_prepared(p);
        Ok(())
    }

    /// The validator set that signs block `h`, when it is already determined (a stored block,
    /// or the next one).
    pub async fn validator_set_at(
        self: &Arc<Self>,
        h: u64,
    ) -> Result<Option<ValidatorSet>, NodeError> {
        let head = self.head().height;
        if h == head + 1 {
            return self.next_validator_set().await.map(Some);
        }
        if h == 0 || h > head {
            return Ok(None);
        }
        self.flush().await;
        match self.store.block_by_height(h).await? {
            Some(b) => ValidatorSet::decode(&b.validator_set)
                .map(Some)
                .map_err(|e| NodeError::Internal(format!("stored validator set: {e}"))),
            None => Ok(None),
        }
    }

    /// A stored block with its transactions, commit certificate and signing validator set.
    pub async fn decided_block(
        self: &Arc<Self>,
        h: u64,
    ) -> Result<Option<(BlockHeader, Vec<SignedTx>, CommitCertificate, ValidatorSet)>, NodeError>
    {
        if h == 0 || h > self.tip().height {
            return Ok(None);
        }
        let Some(b) = self.store.block_by_height(h).await? else {
            return Ok(None);
        };
        let corrupt = |e: String| NodeError::Internal(format!("stored block {h}: {e}"));
        let header = BlockHeader::decode(&b.header).map_err(|e| corrupt(e.to_string()))?;
        let cert = CommitCertificate::decode(&b.commit).map_err(|e| corrupt(e.to_string()))?;
        let set = ValidatorSet::decode(&b.validator_set).map_err(|e| corrupt(e.to_string()))?;
        let txs = self
            .store
            .txs_in_block(h)
            .await?
            .iter()
            .map(|t| SignedTx::decode(&t.raw, self.hash_alg()).map_err(|e| corrupt(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((header, txs, cert, set)))
    }

    async fn execute(
        self: &Arc<Self>,
        block: BlockInfo,
        txs: Vec<SignedTx>,
        mode: Mode,
        proposer: PublicKey,
    ) -> Result<(Prepared, Vec<(SignedTx, String)>), NodeError> {
        let node = self.clone();
        tokio::task::spawn_blocking(move || -> Result<_, NodeError> {
            let view = CommittedView(&node.state);
            let set_vals =
                execution::validators_for_height(&view, &Default::default(), block.height)?;
            let set =
                ValidatorSet::new(set_vals).map_err(|e| NodeError::Internal(e.to_string()))?;
            let t_exec = std::time::Instant::now();
            let exec = execution::execute_block(&block, &view, &node.registry, txs, mode)?;
            let exec_ms = t_exec.elapsed().as_millis();
            let alg = node.hash_alg();
            let ids: Vec<[u8; 32]> = exec.txs.iter().map(|t| t.id().bytes).collect();
            let receipt_bytes: Vec<Vec<u8>> = exec.receipts.iter().map(|r| r.encode()).collect();
            let tx_root = merkle::root(alg, &ids);
            let receipt_root = merkle::root(alg, &receipt_bytes);
            let t_tree = std::time::Instant::now();
            let writes_n = exec.writes.len();
            let state = node.state.prepare(block.height, exec.writes)?;
            tracing::debug!(
                height = block.height,
                txs = exec.txs.len(),
                writes = writes_n,
                exec_ms,
                tree_ms = t_tree.elapsed().as_millis() as u64,
                "executed block"
            );
            let header = BlockHeader {
                chain_id: block.chain_id.clone(),
                height: block.height,
                time_ms: block.time_ms,
                tx_count: ids.len() as u32,
                prev_hash: block.prev_hash,
                tx_root,
                receipt_root,
                state_root: state.root,
                validator_set_hash: set.hash(alg),
                proposer,
            };
            Ok((
                Prepared {
                    header,
                    txs: exec.txs,
                    receipts: exec.receipts,
                    state,
                },
                exec.dropped,
            ))
        })
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))?
    }

    /// The validator set that must sign the next block.
    pub async fn next_validator_set(self: &Arc<Self>) -> Result<ValidatorSet, NodeError> {
        let node = self.clone();
        let h = self.head().height + 1;
        tokio::task::spawn_blocking(move || {
            let view = CommittedView(&node.state);
            let v = execution::validators_for_height(&view, &Default::default(), h)?;
            ValidatorSet::new(v).map_err(|e| NodeError::Internal(e.to_string()))
        })
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))?
    }

    /// Commit a decided block. Uses this node's own proposal when it matches; otherwise
    /// re-executes the transactions and requires the same roots (a block whose execution
    /// differs is refused).
    pub async fn commit(
        self: &Arc<Self>,
        header: BlockHeader,
        txs: Vec<SignedTx>,
        cert: CommitCertificate,
    ) -> Result<(), NodeError> {
        let _guard = self.block_lock.lock().await;
        let head = self.head();
        if header.height != head.height + 1 || header.prev_hash != head.hash {
            return Err(NodeError::Invalid(format!(
                "block {} does not extend the head {}",
                header.height, head.height
            )));
        }
        let set = self.next_validator_set().await?;
        cert.verify(&self.info.chain_id, &header, &set)
            .map_err(|e| NodeError::Invalid(format!("commit certificate: {e}")))?;
        let hash = header.hash();
        let cached = {
            let mut p = self.prepared.lock();
            let found = p.remove(&hash);
            // Other proposals for this height can no longer be decided.
            p.retain(|_, other| other.header.height > header.height);
            found
        };
        let prepared = match cached {
            Some(p) => p,
            None => self.reexecute(&header, txs).await?,
        };
        // At most one decided block is in flight: the previous one must be in the database
        // before this one's state replaces it in the overlay.
        self.flush().await;
        self.state.install_overlay(&prepared.state);
        *self.head.write() = Tip {
            height: header.height,
            hash,
            time_ms: header.time_ms,
        };
        // The next proposal must not pick these transactions again.
        let stale = self.mempool.remove_committed(&prepared.txs);
        let node = self.clone();
        let task = tokio::spawn(async move { node.persist(prepared, cert, set, stale).await });
        *self.persisting.lock().await = Some(task);
        Ok(())
    }

    /// Wait until every decided block is persisted (and its waiters notified).
    pub async fn flush(&self) {
        let task = self.persisting.lock().await.take();
        if let Some(t) = task
            && let Err(e) = t.await
        {
            tracing::error!("block persistence task failed: {e}");
        }
    }

    /// Write a decided block, then publish it: caches, tip, pool cleanup, waiters, subscribers.
    /// A decided block cannot be taken back, so database errors are retried until they clear.
    async fn persist(
        self: &Arc<Self>,
        p: Prepared,
        cert: CommitCertificate,
        set: ValidatorSet,
        stale: Vec<Digest>,
    ) {
        let started = std::time::Instant::now();
        let node = self.clone();
        let Prepared {
            header,
            txs,
            receipts,
            state,
        } = p;
        let height = header.height;
        let hash = header.hash();
        let proposer = header.proposer.to_text();
        let prepared_rows = tokio::task::spawn_blocking(move || -> Result<_, NodeError> {
            let (new_keys, values, nodes) = node.state.rows(&state)?;
            let mut tx_rows = Vec::with_capacity(txs.len());
            let mut events = Vec::new();
            for (i, (tx, rc)) in txs.iter().zip(&receipts).enumerate() {
                for (j, e) in rc.events.iter().enumerate() {
                    events.push(EventRow {
                        tx_idx: i as u32,
                        ev_idx: j as u32,
                        tx_id: tx.id().bytes.to_vec(),
                        contract: e.contract.clone(),
                        kind: e.kind.clone(),
                        data: String::from_utf8_lossy(&e.data).into_owned(),
                    });
                }
                tx_rows.push(TxRow {
                    id: tx.id().bytes.to_vec(),
                    idx: i as u32,
                    sender: tx.body.sender.to_text(),
                    nonce: tx.body.nonce,
                    contract: tx.body.contract.clone(),
                    method: tx.body.method.clone(),
                    raw: tx.bytes().to_vec(),
                    receipt: rc.encode(),
                    ok: rc.status == TxStatus::Ok,
                    code: rc.code.clone(),
                });
            }
            let write = BlockWrite {
                height: header.height,
                hash: header.hash().bytes.to_vec(),
                header: header.encode(),
                commit: cert.encode(),
                validator_set: set.encode(),
                time_ms: header.time_ms,
                txs: tx_rows,
                events,
                new_keys,
                values,
                nodes,
            };
            Ok((write, state, txs, receipts))
        })
        .await;
        let (write, state, txs, receipts) = match prepared_rows {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::error!(height, "cannot encode decided block: {e}");
                return;
            }
            Err(e) => {
                tracing::error!(height, "cannot encode decided block: {e}");
                return;
            }
        };
        let t_db = std::time::Instant::now();
        let mut attempt = 0u32;
        while let Err(e) = self.store.commit_block(&write).await {
            attempt += 1;
            tracing::error!(
                height,
                attempt,
                "persisting decided block failed, retrying: {e}"
            );
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt.min(10)))).await;
        }
        tracing::debug!(
            height,
            rows_ms = started.elapsed().as_millis() as u64 - t_db.elapsed().as_millis() as u64,
            db_ms = t_db.elapsed().as_millis() as u64,
            nodes = write.nodes.len(),
            "persisted block"
        );
        self.state.mark_committed(state);
        let time_ms = write.time_ms;
        drop(write);
        *self.tip.write() = Tip {
            height,
            hash,
            time_ms,
        };
        let mut all_events = Vec::new();
        {
            let mut w = self.waiters.lock();
            for (i, (tx, rc)) in txs.iter().zip(receipts).enumerate() {
                let id = tx.id();
                for e in &rc.events {
                    all_events.push((id, e.clone()));
                }
                if let Some(list) = w.remove(&id) {
                    let outcome = TxOutcome {
                        tx_id: id,
                        height,
                        index: i as u32,
                        receipt: rc.clone(),
                    };
                    for s in list {
                        let _ = s.send(Ok(outcome.clone()));
                    }
                }
            }
            for id in &stale {
                for s in w.remove(id).unwrap_or_default() {
                    let _ = s.send(Err(AdmitError::new(
                        "dropped",
                        "nonce used by another transaction",
                    )));
                }
            }
        }
        self.metrics
            .on_commit(height, txs.len(), self.mempool.len(), started.elapsed());
        let _ = self.events.send(Arc::new(CommittedBlock {
            height,
            hash,
            time_ms,
            tx_count: txs.len(),
            proposer,
            events: all_events,
        }));
        // Clearing the pending pool comes last: it is not on anyone's critical path (a restart
        // re-admits leftover rows and drops them as already committed).
        let ids: Vec<Digest> = txs.iter().map(|t| t.id()).collect();
        let done = self.take_pending_rows(ids.iter().chain(stale.iter()));
        if let Err(e) = self.store.pending_delete(&done).await {
            tracing::warn!("could not clear committed transactions from the pending pool: {e}");
        }
    }

    // ---------------------------------------------------------------- queries

    pub async fn block_header(
        &self,
        height: u64,
    ) -> Result<Option<(BlockHeader, CommitCertificate, ValidatorSet)>, NodeError> {
        let Some(row) = self.store.block_by_height(height).await? else {
            return Ok(None);
        };
        decode_block_row(&row).map(Some)
    }

    pub async fn account(&self, key: &PublicKey) -> Result<AccountView, NodeError> {
        let rec: Option<KeyRecord> = self
            .read_json(state_key(system::NAME, format!("key/{key}").as_bytes()))
            .await?;
        let member: Option<Member> = match &rec {
            Some(r) => {
                self.read_json(state_key(
                    system::NAME,
                    format!("member/{}", r.member).as_bytes(),
                ))
                .await?
            }
            None => None,
        };
        let nonce: u64 = self.read_json(nonce_key(key)).await?.unwrap_or(0);
        Ok(AccountView {
            public_key: key.to_text(),
            did: key.did(),
            nonce,
            pending: self.mempool.pending_count(key),
            next_nonce: self.mempool.next_nonce(key, nonce),
            key_status: rec.as_ref().map(|r| r.status.clone()),
            member: rec.map(|r| r.member),
            roles: member.as_ref().map(|m| m.roles.clone()).unwrap_or_default(),
            organisation: member.map(|m| m.org),
        })
    }

    /// Latest value of `key` in `contract`'s namespace (decided state).
    pub async fn state_value(
        &self,
        contract: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, NodeError> {
        Ok(self.state.get_latest(state_key(contract, key)).await?)
    }

    /// Latest JSON value of `key` in `contract`'s namespace; `None` if absent or not JSON.
    pub async fn state_json<T: serde::de::DeserializeOwned>(
        &self,
        contract: &str,
        key: &str,
    ) -> Result<Option<T>, NodeError> {
        Ok(self.read_json(state_key(contract, key.as_bytes())).await?)
    }

    /// Keys of `contract` under `prefix` with their latest values, in key order (at most
    /// `limit`, after `after` for paging). Deleted keys are skipped.
    pub async fn state_list(
        &self,
        contract: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, NodeError> {
        let rows = self
            .store
            .state_keys_with_prefix(contract, prefix, after, limit)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            if let Some(v) = self.state.get_latest(state_key(contract, &r.key)).await? {
                out.push((r.key, v));
            }
        }
        Ok(out)
    }

    /// Proof bundle that transaction `id` (with its receipt) is in its block.
    pub async fn tx_proof(&self, id: &Digest) -> Result<Option<ProofBundle>, NodeError> {
        let Some(row) = self.store.tx(&id.bytes).await? else {
            return Ok(None);
        };
        let height = row.height as u64;
        let block_row = self.store.block_by_height(height).await?.ok_or_else(|| {
            NodeError::Internal("block of a stored transaction is missing".into())
        })?;
        let txs = self.store.txs_in_block(height).await?;
        let alg = self.hash_alg();
        let ids: Vec<Vec<u8>> = txs.iter().map(|t| t.id.clone()).collect();
        let receipts: Vec<Vec<u8>> = txs.iter().map(|t| t.receipt.clone()).collect();
        let index = row.idx as usize;
        let path = merkle::inclusion_path(alg, &ids, index).unwrap_or_default();
        let rpath = merkle::inclusion_path(alg, &receipts, index).unwrap_or_default();
        Ok(Some(ProofBundle {
            format: FORMAT.into(),
            chain_id: self.info.chain_id.clone(),
            suite: self.info.suite,
            header: hex::encode(&block_row.header),
            commit: hex::encode(&block_row.commit),
            validator_set: hex::encode(&block_row.validator_set),
            claim: Claim::TxInclusion {
                tx: hex::encode(&row.raw),
                index: index as u64,
                tx_count: txs.len() as u64,
                path: path.iter().map(hex::encode).collect(),
                receipt: hex::encode(&row.receipt),
                receipt_path: rpath.iter().map(hex::encode).collect(),
            },
        }))
    }

    /// Value of `contract`/`key` after block `height` (default: latest) with its proof.
    pub async fn state_proof(
        self: &Arc<Self>,
        contract: &str,
        key: &[u8],
        height: Option<u64>,
    ) -> Result<Option<ProofBundle>, NodeError> {
        let height = height.unwrap_or(self.tip().height);
        let Some(block_row) = self.store.block_by_height(height).await? else {
            return Ok(None);
        };
        let full = state_key(contract, key);
        let st = self.state.clone();
        let (value, proof) = tokio::task::spawn_blocking(move || st.prove_blocking(&full, height))
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))??;
        Ok(Some(ProofBundle {
            format: FORMAT.into(),
            chain_id: self.info.chain_id.clone(),
            suite: self.info.suite,
            header: hex::encode(&block_row.header),
            commit: hex::encode(&block_row.commit),
            validator_set: hex::encode(&block_row.validator_set),
            claim: Claim::State {
                contract: contract.to_string(),
                key: hex::encode(key),
                value: value.map(hex::encode),
                leaf: proof.leaf,
                siblings: proof.siblings,
            },
        }))
    }

    /// Walk the stored chain from genesis: header links, certificates against the validator
    /// set in force, transaction and receipt roots, and the state tree root at the tip.
    pub async fn verify_stored_chain(self: &Arc<Self>) -> Result<u64, NodeError> {
        let tip = self.tip();
        let alg = self.hash_alg();
        let mut prev: Option<Digest> = None;
        for h in 0..=tip.height {
            let (header, cert, set) = self
                .block_header(h)
                .await?
                .ok_or_else(|| NodeError::Invalid(format!("block {h} is missing")))?;
            if let Some(p) = prev {
                if header.prev_hash != p {
                    return Err(NodeError::Invalid(format!(
                        "block {h} does not link to block {}",
                        h - 1
                    )));
                }
                cert.verify(&self.info.chain_id, &header, &set)
                    .map_err(|e| NodeError::Invalid(format!("block {h}: {e}")))?;
            } else if header.hash() != self.info.genesis_hash {
                return Err(NodeError::Invalid("genesis block differs".into()));
            }
            let txs = self.store.txs_in_block(h).await?;
            let mut ids = Vec::with_capacity(txs.len());
            let mut receipts = Vec::with_capacity(txs.len());
            for t in &txs {
                let stx = SignedTx::decode(&t.raw, alg)
                    .map_err(|e| NodeError::Invalid(format!("block {h}: {e}")))?;
                stx.verify_signature()
                    .map_err(|e| NodeError::Invalid(format!("block {h} tx {}: {e}", stx.id())))?;
                ids.push(stx.id().bytes);
                receipts.push(t.receipt.clone());
            }
            if merkle::root(alg, &ids) != header.tx_root {
                return Err(NodeError::Invalid(format!(
                    "block {h}: transactions do not match tx_root"
                )));
            }
            if merkle::root(alg, &receipts) != header.receipt_root {
                return Err(NodeError::Invalid(format!(
                    "block {h}: receipts do not match receipt_root"
                )));
            }
            prev = Some(header.hash());
            if h == tip.height {
                // The persisted tree must reproduce the tip's state root.
                let st = self.state.clone();
                let probe = tokio::task::spawn_blocking(move || {
                    st.prove_blocking(b"system\0validators", h)
                })
                .await
                .map_err(|e| NodeError::Internal(e.to_string()))??;
                let (value, proof) = probe;
                crate::state::verify_state_proof(
                    alg,
                    &header.state_root.bytes,
                    b"system\0validators",
                    value.as_deref(),
                    &proof,
                )
                .map_err(|e| NodeError::Invalid(format!("state tree at tip: {e}")))?;
            }
        }
        Ok(tip.height)
    }
}

pub fn decode_block_row(
    row: &crate::storage::entities::block::Model,
) -> Result<(BlockHeader, CommitCertificate, ValidatorSet), NodeError> {
    let header = BlockHeader::decode(&row.header)
        .map_err(|e| NodeError::Internal(format!("stored header: {e}")))?;
    let cert = CommitCertificate::decode(&row.commit)
        .map_err(|e| NodeError::Internal(format!("stored commit: {e}")))?;
    let set = ValidatorSet::decode(&row.validator_set)
        .map_err(|e| NodeError::Internal(format!("stored validator set: {e}")))?;
    Ok((header, cert, set))
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    pub public_key: String,
    pub did: String,
    /// Next nonce to use (committed).
    pub nonce: u64,
    /// Transactions of this key waiting in the pool.
    pub pending: usize,
    /// The nonce to sign the next transaction with: after the committed nonce and the
    /// consecutive run of this key's pooled transactions.
    pub next_nonce: u64,
    pub key_status: Option<Status>,
    pub member: Option<String>,
    pub organisation: Option<String>,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Submitted {
    Pending(Digest),
    Committed(TxOutcome),
}

/// Verifies admitted transactions in batches (one multi-core batch verification and one
/// database transaction per batch), then puts them into the pool and acknowledges them.
async fn admission_worker(node: std::sync::Weak<Node>, mut rx: mpsc::Receiver<AdmitJob>) {
    loop {
        let Some(first) = rx.recv().await else { return };
        let Some(node) = node.upgrade() else { return };
        let mut jobs = vec![first];
        while jobs.len() < node.cfg.admission_batch {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let (jobs, results) = match tokio::task::spawn_blocking(move || {
            let msgs: Vec<Vec<u8>> = jobs.iter().map(|j| j.tx.signing_message()).collect();
            let items: Vec<VerifyItem> = jobs
                .iter()
                .zip(&msgs)
                .map(|(j, m)| VerifyItem {
                    key: &j.tx.body.sender,
                    msg: m,
                    sig: &j.tx.signature,
                })
                .collect();
            let results = verify_batch(&items);
            (jobs, results)
        })
        .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("signature verification task failed: {e}");
                continue;
            }
        };
        let mut accepted = Vec::with_capacity(jobs.len());
        for (job, res) in jobs.into_iter().zip(results) {
            if let Err(e) = res {
                let _ = job
                    .reply
                    .send(Err(AdmitError::new("bad_signature", e.to_string())));
                continue;
            }
            match node.mempool.insert(job.tx.clone(), job.committed_nonce) {
                Ok(()) => accepted.push(job),
                Err(e) => {
                    let err = match e {
                        InsertError::Duplicate => {
                            AdmitError::new("duplicate", "this transaction is already pending")
                        }
                        InsertError::NonceInUse(n) => AdmitError::new(
                            "nonce_in_use",
                            format!("another pending transaction of this sender uses nonce {n}"),
                        ),
                        InsertError::Stale(next) => AdmitError::new(
                            "stale_nonce",
                            format!("nonce already used; the account's next nonce is {next}"),
                        ),
                        InsertError::Full => AdmitError {
                            code: "mempool_full",
                            message: "the node is at capacity; retry shortly".into(),
                            retry_after_s: Some(1),
                        },
                    };
                    let _ = job.reply.send(Err(err));
                }
            }
        }
        if accepted.is_empty() {
            continue;
        }
        let now = now_ms();
        let mut rows: Vec<(i64, Vec<u8>, u64)> = Vec::with_capacity(accepted.len());
        {
            // Recorded before the insert so that a commit racing with it finds the row.
            let mut known = node.pending_rows.lock();
            for j in &accepted {
                let seq = match j.restored_seq {
                    Some(seq) => seq,
                    // Relayed by a peer: the node its client used acknowledged it only once it
                    // was durable there, and relays it again after a restart. Written here
                    // too, every transaction would cost each node of an n-node chain n writes
                    // and n deletions; kept in memory, a crash here loses nothing.
                    None if !j.relay => continue,
                    None => {
                        let seq = node
                            .next_pending_seq
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        rows.push((seq, j.tx.bytes().to_vec(), now));
                        seq
                    }
                };
                known.insert(j.tx.id(), seq);
            }
        }
        match node.store.pending_insert(&rows).await {
            Ok(()) => {
                if node.admitted.receiver_count() > 0 {
                    let relayed: Vec<Vec<u8>> = accepted
                        .iter()
                        .filter(|j| j.relay)
                        .map(|j| j.tx.bytes().to_vec())
                        .collect();
                    if !relayed.is_empty() {
                        let _ = node.admitted.send(Arc::new(relayed));
                    }
                }
                for j in accepted {
                    let _ = j.reply.send(Ok(()));
                }
                node.metrics.mempool_txs.set(node.mempool.len() as i64);
                node.new_tx.notify_one();
            }
            Err(e) => {
                tracing::error!("persisting admitted transactions failed: {e}");
                let ids: Vec<Digest> = accepted.iter().map(|j| j.tx.id()).collect();
                node.mempool.remove(&ids);
                node.take_pending_rows(ids.iter());
                for j in accepted {
                    let _ = j.reply.send(Err(AdmitError::new(
                        "internal",
                        "could not persist the transaction",
                    )));
                }
            }
        }
    }
}
