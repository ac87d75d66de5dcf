//! The gateway's Prometheus metrics. The handles are shared: [`GatewayMetrics::registry`]
//! builds a registry over them for whoever serves `/metrics` (the node's endpoint when the
//! gateway runs inside the node, the gateway's own when it runs alone).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

#[derive(Clone)]
pub struct GatewayMetrics {
    /// Accepted (verified and stored) messages, by channel (`readings`, `scans`).
    pub accepted: Family<Labels, Counter>,
    /// Refused messages, by reason (the stable codes of `payload::Reject`).
    pub rejected: Family<Labels, Counter>,
    pub batches_anchored: Counter,
    pub messages_anchored: Counter,
    /// Failed anchoring rounds (node unreachable, pool full…); the batches stay pending.
    pub anchor_failures: Counter,
    /// Accepted messages whose batch is not anchored yet: the outbox.
    pub outbox: Gauge,
    /// From a message's arrival at the gateway to its batch's anchoring transaction committed.
    pub arrival_to_anchor_seconds: Histogram,
    /// Messages per ingested batch (whatever arrived while the previous one was stored).
    pub ingest_batch_messages: Histogram,
    /// Time to verify and durably store one ingested batch.
    pub ingest_seconds: Histogram,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self {
            accepted: Family::default(),
            rejected: Family::default(),
            batches_anchored: Counter::default(),
            messages_anchored: Counter::default(),
            anchor_failures: Counter::default(),
            outbox: Gauge::default(),
            arrival_to_anchor_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            ingest_batch_messages: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            ingest_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 12)),
        }
    }
}

impl GatewayMetrics {
    pub fn accept(&self, channel: &str) {
        self.accepted
            .get_or_create(&vec![("channel".into(), channel.into())])
            .inc();
    }

    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }

    /// A registry over these metrics, named `trellis_iot_*`.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("trellis_iot");
        r.register(
            "messages_accepted",
            "Device messages verified and stored, by channel",
            self.accepted.clone(),
        );
        r.register(
            "messages_rejected",
            "Device messages refused, by reason",
            self.rejected.clone(),
        );
        r.register(
            "batches_anchored",
            "Batches whose Merkle root was anchored on chain",
            self.batches_anchored.clone(),
        );
        r.register(
            "messages_anchored",
            "Device messages in anchored batches",
            self.messages_anchored.clone(),
        );
        r.register(
            "anchor_failures",
            "Anchoring rounds that failed (the batches stay in the outbox)",
            self.anchor_failures.clone(),
        );
        r.register(
            "outbox_messages",
            "Accepted messages not anchored yet",
            self.outbox.clone(),
        );
        r.register(
            "arrival_to_anchor_seconds",
            "Time from a message's arrival to its batch's anchoring transaction committed",
            self.arrival_to_anchor_seconds.clone(),
        );
        r.register(
            "ingest_batch_messages",
            "Messages per batch taken from the broker, verified and stored together",
            self.ingest_batch_messages.clone(),
        );
        r.register(
            "ingest_seconds",
            "Time to verify and durably store one batch of messages",
            self.ingest_seconds.clone(),
        );
        r
    }

    /// The metrics alone in the OpenMetrics text format (the standalone gateway's `/metrics`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry()).is_err() {
            out.clear();
        }
        out
    }
}
