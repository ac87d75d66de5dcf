//! The consensus boundary. An engine decides blocks; the node (the application) proposes,
//! re-executes and commits them. Engines differ only in how they collect precommit signatures;
//! every engine produces the same `CommitCertificate`, so the block format never depends on the
//! engine.
//!
//! `SoloEngine` is the embedded single-validator engine: it proposes, signs its own precommit
//! (which alone is more than 2/3 of the power) and commits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::crypto::SigningKey;
use crate::node::{Node, NodeError, now_ms};
use crate::types::{CommitCertificate, CommitSig};

/// A consensus engine drives a node until `shutdown` becomes true.
pub trait ConsensusEngine: Send + 'static {
    fn run(
        self,
        node: Arc<Node>,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = Result<(), NodeError>> + Send;
}

#[derive(Debug, Clone)]
pub struct SoloConfig {
    /// Minimum spacing between blocks, so transactions arriving together share a block.
    pub min_block_interval: Duration,
    /// Produce an empty block after this long without transactions, so block time (which
    /// contracts use for deadlines) keeps moving. `None` disables empty blocks.
    pub empty_block_interval: Option<Duration>,
}

impl Default for SoloConfig {
    fn default() -> Self {
        Self {
            min_block_interval: Duration::from_millis(20),
            empty_block_interval: Some(Duration::from_secs(2)),
        }
    }
}

pub struct SoloEngine {
    key: SigningKey,
    cfg: SoloConfig,
}

impl SoloEngine {
    pub fn new(key: SigningKey, cfg: SoloConfig) -> Self {
        Self { key, cfg }
    }

    /// Propose, sign and commit one block.
    pub async fn step(&self, node: &Arc<Node>) -> Result<u64, NodeError> {
        let set = node.next_validator_set().await?;
        let Some(index) = set.index_of(&self.key.public_key()) else {
            return Err(NodeError::Invalid(
                "this node's validator key is not in the validator set".into(),
            ));
        };
        // The next block executes while the previous one is still being written (`commit`
        // waits for that write before installing this block's state). Waiting for the write
        // first made blocks larger but put execution and the database write in series: at a
        // moderate load (5,000 tx/s) that cycle was the commit latency, and near saturation the
        // larger blocks fed it back into ever larger ones.
        let proposed = node.propose(now_ms(), &self.key.public_key()).await?;
        let hash = proposed.header.hash();
        let msg = CommitCertificate::precommit_message(
            &node.info.chain_id,
            proposed.header.height,
            0,
            &hash,
        );
        let cert = CommitCertificate {
            height: proposed.header.height,
            round: 0,
            block_hash: hash,
            signatures: vec![CommitSig {
                validator_index: index as u32,
                signature: self.key.sign(&msg),
            }],
        };
        let h = proposed.header.height;
        node.commit(proposed.header, proposed.txs, cert).await?;
        Ok(h)
    }
}

impl ConsensusEngine for SoloEngine {
    async fn run(
        self,
        node: Arc<Node>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), NodeError> {
        let mut last_block = tokio::time::Instant::now();
        loop {
            if *shutdown.borrow() {
                node.flush().await;
                return Ok(());
            }
            if node.mempool.has_ready() {
                let since = last_block.elapsed();
                if since < self.cfg.min_block_interval {
                    tokio::time::sleep(self.cfg.min_block_interval - since).await;
                }
            } else {
                let wait = self
                    .cfg
                    .empty_block_interval
                    .map(|d| d.saturating_sub(last_block.elapsed()))
                    .unwrap_or(Duration::from_secs(3600));
                tokio::select! {
                    _ = node.tx_arrived() => continue,
                    _ = tokio::time::sleep(wait) => {
                        if self.cfg.empty_block_interval.is_none() { continue; }
                    }
                    _ = shutdown.changed() => {
                        node.flush().await;
                        return Ok(());
                    }
                }
            }
            last_block = tokio::time::Instant::now();
            if let Err(e) = self.step(&node).await {
                // Storage errors are retried; the same height is proposed again.
                tracing::error!("block production failed: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
