//! Transaction relay between nodes: what a client submits to any node reaches every other
//! node's pool (so whichever validator proposes next can include it), over the peers' HTTP API.
//! Relayed batches carry a header so the receiver does not relay them again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::node::Node;

pub const RELAYED_HEADER: &str = "x-trellis-relayed";

/// Most transactions per relayed batch.
const BATCH: usize = 2_000;

/// Relay client-submitted transactions to `peers` (base URLs such as `http://10.0.0.2:8080`)
/// until `shutdown`.
pub async fn run(node: Arc<Node>, peers: Vec<String>, mut shutdown: watch::Receiver<bool>) {
    if peers.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("transaction relay disabled: {e}");
            return;
        }
    };
    let mut rx = node.subscribe_admitted();
    // What this node acknowledged before a restart goes to the peers again first: they keep
    // relayed transactions in memory only.
    let mut restored = node.take_restored();
    loop {
        let mut batch: Vec<Vec<u8>> = if restored.is_empty() {
            let first = tokio::select! {
                r = rx.recv() => r,
                _ = shutdown.changed() => return,
            };
            match first {
                Ok(b) => b.as_ref().clone(),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("transaction relay fell behind; {n} batches not relayed");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        } else {
            restored.drain(..restored.len().min(BATCH)).collect()
        };
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(b) => batch.extend(b.iter().cloned()),
                Err(_) => break,
            }
        }
        let body = serde_json::json!({
            "txs": batch.iter().map(hex::encode).collect::<Vec<_>>(),
        });
        let sends = peers.iter().map(|peer| {
            let client = client.clone();
            let body = &body;
            async move {
                let url = format!("{}/api/v1/txs/batch", peer.trim_end_matches('/'));
                // One retry: a peer that is restarting usually answers a second later.
                for attempt in 0..2 {
                    let res = client
                        .post(&url)
                        .header(RELAYED_HEADER, "1")
                        .json(body)
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status().is_success() => return,
                        Ok(r) => {
                            tracing::debug!(peer = %url, status = %r.status(), "relay refused")
                        }
                        Err(e) => tracing::debug!(peer = %url, "relay failed: {e}"),
                    }
                    if attempt == 0 {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                tracing::warn!(peer = %url, "could not relay transactions to a peer");
            }
        });
        futures::future::join_all(sends).await;
    }
}
