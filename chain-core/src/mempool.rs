//! The transaction pool: admitted transactions waiting for a block, ordered per sender by nonce,
//! bounded in count and bytes. Proposals take, sender by sender in order of arrival, each
//! sender's run of consecutive nonces starting at its next committed nonce.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use parking_lot::Mutex;

use crate::crypto::{Digest, PublicKey};
use crate::types::SignedTx;

#[derive(Debug, Clone)]
pub struct MempoolLimits {
    pub max_txs: usize,
    pub max_bytes: usize,
    /// How far ahead of the account's next nonce a transaction may be.
    pub max_nonce_gap: u64,
}

impl Default for MempoolLimits {
    fn default() -> Self {
        Self {
            max_txs: 200_000,
            max_bytes: 256 * 1024 * 1024,
            max_nonce_gap: 1_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error("the transaction is already pending")]
    Duplicate,
    #[error("another pending transaction already uses nonce {0}")]
    NonceInUse(u64),
    #[error("the pool is full")]
    Full,
    #[error("nonce already used; the account's next nonce is {0}")]
    Stale(u64),
}

struct SenderQueue {
    /// Matches the entry of this queue in `Inner::order` (older entries are stale).
    generation: u64,
    /// Next nonce the chain expects from this sender (as of the last commit we saw).
    next_nonce: u64,
    txs: BTreeMap<u64, SignedTx>,
}

#[derive(Default)]
struct Inner {
    senders: HashMap<PublicKey, SenderQueue>,
    /// Senders in order of arrival (round robin for fairness). Entries are removed lazily: an
    /// entry counts only while its generation matches the sender's live queue.
    order: VecDeque<(PublicKey, u64)>,
    generation: u64,
    ids: HashSet<Digest>,
    bytes: usize,
    /// Next nonces of senders whose queue emptied recently. Admission reads an account's nonce
    /// a moment before inserting; if a block for that sender commits in between, this corrects
    /// the stale value when the sender's queue is re-created.
    recent: HashMap<PublicKey, u64>,
    recent_order: VecDeque<PublicKey>,
}

const RECENT_SENDERS: usize = 50_000;

pub struct Mempool {
    limits: MempoolLimits,
    inner: Mutex<Inner>,
}

impl Mempool {
    pub fn new(limits: MempoolLimits) -> Self {
        Self {
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn limits(&self) -> &MempoolLimits {
        &self.limits
    }

    pub fn len(&self) -> usize {
        self.inner.lock().ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    pub fn contains(&self, id: &Digest) -> bool {
        self.inner.lock().ids.contains(id)
    }

    /// Whether a new transaction of `size` bytes would fit (checked early, before the
    /// expensive signature check).
    pub fn has_room(&self, size: usize) -> bool {
        let g = self.inner.lock();
        g.ids.len() < self.limits.max_txs && g.bytes + size <= self.limits.max_bytes
    }

    /// Pending nonces of a sender, to tell a client what it has in flight.
    pub fn pending_count(&self, sender: &PublicKey) -> usize {
        self.inner
            .lock()
            .senders
            .get(sender)
            .map_or(0, |q| q.txs.len())
    }

    /// The nonce a sender should sign next, given its committed next nonce: past the run of
    /// consecutive pooled nonces. Read under the pool's lock, so it never mixes the pool
    /// before and after a commit (a commit updates the queue's floor and empties it at once).
    pub fn next_nonce(&self, sender: &PublicKey, committed_nonce: u64) -> u64 {
        let g = self.inner.lock();
        let floor = committed_nonce.max(g.recent.get(sender).copied().unwrap_or(0));
        match g.senders.get(sender) {
            None => floor,
            Some(q) => {
                let mut next = floor.max(q.next_nonce);
                while q.txs.contains_key(&next) {
                    next += 1;
                }
                next
            }
        }
    }

    /// Insert an admitted transaction. `committed_nonce` is the sender's next nonce in
    /// committed state (already checked by admission).
    pub fn insert(&self, tx: SignedTx, committed_nonce: u64) -> Result<(), InsertError> {
        let mut g = self.inner.lock();
        let size = tx.bytes().len();
        if g.ids.contains(&tx.id()) {
            return Err(InsertError::Duplicate);
        }
        if g.ids.len() >= self.limits.max_txs || g.bytes + size > self.limits.max_bytes {
            return Err(InsertError::Full);
        }
        let sender = tx.body.sender.clone();
        let is_new_sender = !g.senders.contains_key(&sender);
        let known = g.recent.get(&sender).copied().unwrap_or(0);
        let generation = g.generation + 1;
        let q = g.senders.entry(sender.clone()).or_insert(SenderQueue {
            generation,
            next_nonce: committed_nonce.max(known),
            txs: BTreeMap::new(),
        });
        if tx.body.nonce < q.next_nonce {
            return Err(InsertError::Stale(q.next_nonce));
        }
        q.next_nonce = q.next_nonce.max(committed_nonce);
        if q.txs.contains_key(&tx.body.nonce) {
            return Err(InsertError::NonceInUse(tx.body.nonce));
        }
        q.txs.insert(tx.body.nonce, tx.clone());
        if is_new_sender {
            g.generation = generation;
            g.order.push_back((sender, generation));
            if g.order.len() > 2 * g.senders.len() + 64 {
                let Inner { order, senders, .. } = &mut *g;
                order.retain(|(s, gen_)| senders.get(s).is_some_and(|q| q.generation == *gen_));
            }
        }
        g.ids.insert(tx.id());
        g.bytes += size;
        Ok(())
    }

    /// Transactions for the next proposal: up to `max_txs` / `max_bytes`, each sender's
    /// consecutive nonces from its next nonce. Does not remove them (commit does).
    pub fn reap(&self, max_txs: usize, max_bytes: usize) -> Vec<SignedTx> {
        let mut g = self.inner.lock();
        let mut out = Vec::with_capacity(max_txs.min(g.ids.len()));
        let mut bytes = 0usize;
        let Inner { order, senders, .. } = &mut *g;
        // Round robin: every sender served goes to the back of the line, so a block that fills
        // up early does not starve the senders behind it in the next blocks.
        for _ in 0..order.len() {
            let Some((s, generation)) = order.pop_front() else {
                break;
            };
            let Some(q) = senders.get(&s).filter(|q| q.generation == generation) else {
                continue; // stale entry of an emptied queue
            };
            // `next_nonce` is only a lower bound (admission read it before the latest commits),
            // so the run starts at the lowest pending nonce; execution leaves out a run that is
            // still ahead of the account and keeps it pooled.
            let start = q.txs.range(q.next_nonce..).next().map(|(n, _)| *n);
            let mut full = false;
            if let Some(start) = start {
                for (expect, (n, tx)) in (start..).zip(q.txs.range(start..)) {
                    if *n != expect {
                        break;
                    }
                    if out.len() >= max_txs || bytes + tx.bytes().len() > max_bytes {
                        full = true;
                        break;
                    }
                    bytes += tx.bytes().len();
                    out.push(tx.clone());
                }
            }
            order.push_back((s, generation));
            if full {
                break;
            }
        }
        out
    }

    /// Whether any transaction could go into a block now.
    pub fn has_ready(&self) -> bool {
        let g = self.inner.lock();
        g.senders
            .values()
            .any(|q| q.txs.contains_key(&q.next_nonce))
    }

    /// Remove committed (or permanently invalid) transactions and advance nonces; also drops
    /// any transaction of those senders whose nonce is now stale. Returns ids removed as stale.
    pub fn remove_committed(&self, committed: &[SignedTx]) -> Vec<Digest> {
        let mut g = self.inner.lock();
        let mut stale = Vec::new();
        let mut touched: HashMap<PublicKey, u64> = HashMap::new();
        for tx in committed {
            let e = touched.entry(tx.body.sender.clone()).or_insert(0);
            *e = (*e).max(tx.body.nonce + 1);
        }
        for (sender, next) in touched {
            let mut removed_bytes = 0usize;
            let mut removed_ids = Vec::new();
            let empty = if let Some(q) = g.senders.get_mut(&sender) {
                q.next_nonce = q.next_nonce.max(next);
                let keep = q.txs.split_off(&q.next_nonce);
                for (_, tx) in std::mem::replace(&mut q.txs, keep) {
                    removed_bytes += tx.bytes().len();
                    removed_ids.push(tx.id());
                }
                q.txs.is_empty()
            } else {
                false
            };
            for id in &removed_ids {
                g.ids.remove(id);
            }
            g.bytes -= removed_bytes;
            if empty {
                if let Some(q) = g.senders.remove(&sender) {
                    if g.recent.insert(sender.clone(), q.next_nonce).is_none() {
                        g.recent_order.push_back(sender.clone());
                    }
                    while g.recent_order.len() > RECENT_SENDERS {
                        if let Some(old) = g.recent_order.pop_front() {
                            g.recent.remove(&old);
                        }
                    }
                }
            } else if let Some(known) = g.recent.get_mut(&sender) {
                *known = (*known).max(next);
            }
            stale.extend(removed_ids);
        }
        let committed_ids: HashSet<Digest> = committed.iter().map(|t| t.id()).collect();
        stale.retain(|id| !committed_ids.contains(id));
        stale
    }

    /// Remove specific transactions (e.g. expired ones a proposal left out).
    pub fn remove(&self, ids: &[Digest]) {
        let mut g = self.inner.lock();
        let wanted: HashSet<&Digest> = ids.iter().collect();
        let mut bytes = 0usize;
        let mut emptied = Vec::new();
        for (s, q) in g.senders.iter_mut() {
            q.txs.retain(|_, tx| {
                if wanted.contains(&tx.id()) {
                    bytes += tx.bytes().len();
                    false
                } else {
                    true
                }
            });
            if q.txs.is_empty() {
                emptied.push(s.clone());
            }
        }
        for id in ids {
            g.ids.remove(id);
        }
        g.bytes -= bytes;
        for s in emptied {
            g.senders.remove(&s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{SigAlg, SigningKey, Suite};
    use crate::types::build_tx;

    fn tx(k: &SigningKey, nonce: u64) -> SignedTx {
        build_tx(
            Suite::Ed25519Sha256,
            "c",
            k,
            nonce,
            u64::MAX,
            "notary",
            "anchor",
            b"{}".to_vec(),
        )
    }

    #[test]
    fn a_stale_admission_nonce_does_not_strand_the_next_transaction() {
        let a = SigningKey::from_label(SigAlg::Ed25519, "a");
        let pool = Mempool::new(MempoolLimits::default());
        pool.insert(tx(&a, 5), 5).unwrap();
        let block = pool.reap(100, usize::MAX);
        // Admission of nonce 6 read the account's nonce (5) before the block committed …
        pool.remove_committed(&block);
        // … and inserts after it: the pool must still offer nonce 6 to the next proposal.
        pool.insert(tx(&a, 6), 5).unwrap();
        assert!(pool.has_ready());
        let next = pool.reap(100, usize::MAX);
        assert_eq!(
            next.iter().map(|t| t.body.nonce).collect::<Vec<_>>(),
            vec![6]
        );
        // A replay of the committed nonce is refused even with the stale reading.
        assert_eq!(pool.insert(tx(&a, 5), 5), Err(InsertError::Stale(6)));
    }

    #[test]
    fn next_nonce_skips_the_pooled_run_and_is_consistent_across_a_commit() {
        let a = SigningKey::from_label(SigAlg::Ed25519, "a");
        let pool = Mempool::new(MempoolLimits::default());
        assert_eq!(pool.next_nonce(&a.public_key(), 3), 3);
        for n in [3, 4, 6] {
            pool.insert(tx(&a, n), 3).unwrap();
        }
        // 6 is ahead of a gap: the next nonce to sign is 5, which fills it.
        assert_eq!(pool.next_nonce(&a.public_key(), 3), 5);
        let block = pool.reap(100, usize::MAX);
        pool.remove_committed(&block);
        // A reader that saw the committed nonce before the commit (3) still gets 5: the pool
        // remembers how far the commit went.
        assert_eq!(pool.next_nonce(&a.public_key(), 3), 5);
        assert_eq!(pool.next_nonce(&a.public_key(), 5), 5);
    }

    #[test]
    fn full_blocks_rotate_between_senders() {
        let keys: Vec<SigningKey> = (0..4)
            .map(|i| SigningKey::from_label(SigAlg::Ed25519, &format!("s{i}")))
            .collect();
        let pool = Mempool::new(MempoolLimits::default());
        for k in &keys {
            for n in 0..10 {
                pool.insert(tx(k, n), 0).unwrap();
            }
        }
        // Every sender keeps 10 transactions pending (clients keep sending); blocks take 15.
        // Within four blocks every sender must get its turn.
        let mut next = [10u64; 4];
        let mut served = std::collections::HashSet::new();
        for _ in 0..4 {
            let block = pool.reap(15, usize::MAX);
            for t in &block {
                served.insert(t.body.sender.clone());
            }
            pool.remove_committed(&block);
            for (i, k) in keys.iter().enumerate() {
                let done = block
                    .iter()
                    .filter(|t| t.body.sender == k.public_key())
                    .count();
                for _ in 0..done {
                    pool.insert(tx(k, next[i]), 0).unwrap();
                    next[i] += 1;
                }
            }
        }
        assert_eq!(served.len(), 4, "a sender starved");
    }

    #[test]
    fn reaps_consecutive_nonces_only_and_respects_limits() {
        let a = SigningKey::from_label(SigAlg::Ed25519, "a");
        let b = SigningKey::from_label(SigAlg::Ed25519, "b");
        let pool = Mempool::new(MempoolLimits {
            max_txs: 5,
            ..Default::default()
        });
        pool.insert(tx(&a, 0), 0).unwrap();
        pool.insert(tx(&a, 2), 0).unwrap(); // gap: not ready
        pool.insert(tx(&b, 3), 3).unwrap();
        pool.insert(tx(&b, 4), 3).unwrap();
        assert_eq!(pool.insert(tx(&b, 4), 3), Err(InsertError::Duplicate));
        let reaped = pool.reap(100, usize::MAX);
        let got: Vec<(bool, u64)> = reaped
            .iter()
            .map(|t| (t.body.sender == a.public_key(), t.body.nonce))
            .collect();
        assert_eq!(got, vec![(true, 0), (false, 3), (false, 4)]);
        pool.insert(tx(&a, 1), 0).unwrap();
        assert_eq!(pool.insert(tx(&a, 5), 0), Err(InsertError::Full));
        let stale = pool.remove_committed(&reaped);
        assert!(stale.is_empty());
        assert_eq!(pool.len(), 2);
        let next = pool.reap(100, usize::MAX);
        assert_eq!(
            next.iter().map(|t| t.body.nonce).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }
}
