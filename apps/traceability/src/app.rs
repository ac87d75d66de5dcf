//! The traceability app's shared state: the node, the read model and its indexer, the EPCIS
//! schema validator and the consumer-scan rule. The root binary builds one and hands it to
//! [`crate::routes`].

use std::sync::Arc;

use chain_core::node::Node;
use sea_orm::DatabaseConnection;

use crate::epcis::validate::EpcisValidator;
use crate::indexer::Indexed;

/// When a serialised code counts as suspicious: more than `max_scanners` distinct scanners
/// (browsers) within `window_ms`. A genuine item is scanned by its buyer and a few family
/// members; a copied code printed on many fakes is scanned by many strangers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanRule {
    pub max_scanners: u32,
    pub window_ms: u64,
}

impl Default for ScanRule {
    fn default() -> Self {
        Self {
            max_scanners: 5,
            window_ms: 30 * 24 * 3600 * 1000,
        }
    }
}

pub struct TraceApp {
    pub node: Arc<Node>,
    /// The read model's database (the node's own by default).
    pub db: DatabaseConnection,
    pub indexed: Indexed,
    /// `None` when the official EPCIS 2.0 schema directory was not found: capture then checks
    /// only what the event hash and the index need (see `docs/spec/epcis.md`).
    pub validator: Option<Arc<EpcisValidator>>,
    pub scan_rule: ScanRule,
    /// Largest EPCIS document `POST /epcis/capture` accepts, in events.
    pub max_capture_events: usize,
    /// The node's transaction size limit: capture splits documents into transactions below it.
    pub max_tx_bytes: usize,
    /// Base URL of this resolver, for QR codes and labels (no trailing slash).
    pub public_url: String,
    /// Consumer scans and the counterfeit rule.
    pub scans: Arc<crate::scans::ScanBook>,
}

pub type TraceShared = Arc<TraceApp>;
