//! Prometheus metrics of a node (served at /metrics).

use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    /// Registries of parts that run beside the node (the IoT gateway), served with its own.
    attached: parking_lot::RwLock<Vec<Registry>>,
    pub height: Gauge,
    pub mempool_txs: Gauge,
    pub txs_admitted: Counter,
    pub txs_rejected: Family<Vec<(String, String)>, Counter>,
    pub txs_committed: Counter,
    pub blocks_committed: Counter,
    pub block_persist_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("trellis");
        let height = Gauge::default();
        let mempool_txs = Gauge::default();
        let txs_admitted = Counter::default();
        let txs_rejected = Family::<Vec<(String, String)>, Counter>::default();
        let txs_committed = Counter::default();
        let blocks_committed = Counter::default();
        let block_persist_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "chain_height",
            "Height of the latest committed block",
            height.clone(),
        );
        registry.register(
            "mempool_transactions",
            "Transactions waiting in the pool",
            mempool_txs.clone(),
        );
        registry.register(
            "transactions_admitted",
            "Transactions admitted into the pool",
            txs_admitted.clone(),
        );
        registry.register(
            "transactions_rejected",
            "Submissions rejected at admission, by error code",
            txs_rejected.clone(),
        );
        registry.register(
            "transactions_committed",
            "Transactions committed in blocks",
            txs_committed.clone(),
        );
        registry.register(
            "blocks_committed",
            "Blocks committed",
            blocks_committed.clone(),
        );
        registry.register(
            "block_persist_seconds",
            "Time to persist a decided block",
            block_persist_seconds.clone(),
        );
        Self {
            registry,
            attached: parking_lot::RwLock::new(Vec::new()),
            height,
            mempool_txs,
            txs_admitted,
            txs_rejected,
            txs_committed,
            blocks_committed,
            block_persist_seconds,
        }
    }

    pub fn reject(&self, code: &str) {
        self.txs_rejected
            .get_or_create(&vec![("code".to_string(), code.to_string())])
            .inc();
    }

    pub fn on_commit(&self, height: u64, txs: usize, mempool: usize, took: Duration) {
        self.height.set(height as i64);
        self.mempool_txs.set(mempool as i64);
        self.txs_committed.inc_by(txs as u64);
        self.blocks_committed.inc();
        self.block_persist_seconds.observe(took.as_secs_f64());
    }

    /// Serves `registry` at `/metrics` beside the node's own metrics.
    pub fn attach(&self, registry: Registry) {
        self.attached.write().push(registry);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let attached = self.attached.read();
        let ok = encode_registry(&mut out, &self.registry).is_ok()
            && attached
                .iter()
                .all(|r| encode_registry(&mut out, r).is_ok())
            && encode_eof(&mut out).is_ok();
        if !ok {
            out.clear();
        }
        out
    }
}
