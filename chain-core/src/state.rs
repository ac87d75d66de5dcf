//! The authenticated state: a Jellyfish Merkle tree (jmt crate) whose version is the block
//! height, persisted through `Store`. Tree nodes and latest values are cached in bounded LRUs.
//!
//! jmt's storage traits are synchronous, so tree updates and proofs run on blocking threads and
//! reach the async database with `Handle::block_on`.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jmt::storage::{LeafNode, Node, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{JellyfishMerkleTree, KeyHash, OwnedValue, Version};
use lru::LruCache;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::contract::{StateRead, WriteSet, split_state_key};
use crate::crypto::jmt_hashers::{Sha256Hasher, Sm3Hasher};
use crate::crypto::{Digest, HashAlg, Suite};
use crate::storage::{StorageError, Store};

pub const PLACEHOLDER: [u8; 32] = *b"SPARSE_MERKLE_PLACEHOLDER_HASH__";
pub const LEAF_DOMAIN: &[u8] = b"JMT::LeafNode";
pub const INTERNAL_DOMAIN: &[u8] = b"JMT::IntrnalNode";

const NODE_CACHE: usize = 60_000;
const VALUE_CACHE: usize = 100_000;
/// Bits of the existing-keys filter (8 MiB): under 1% false positives up to ~7M keys.
const FILTER_BITS: usize = 1 << 26;

/// Bloom filter over the hashes of every key ever written. Contracts often read keys that do
/// not exist yet (a new document, a first nonce); a negative answer here skips the database
/// round trip. Key hashes are uniformly distributed, so their 64-bit words serve directly as
/// the filter's independent hash functions.
pub struct KeyFilter {
    words: Vec<AtomicU64>,
}

impl KeyFilter {
    fn new() -> Self {
        Self {
            words: (0..FILTER_BITS / 64).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    fn positions(kh: &[u8; 32]) -> [usize; 4] {
        let mut out = [0usize; 4];
        for (i, o) in out.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&kh[i * 8..i * 8 + 8]);
            *o = (u64::from_le_bytes(w) as usize) % FILTER_BITS;
        }
        out
    }
    pub fn insert(&self, kh: &[u8; 32]) {
        for p in Self::positions(kh) {
            self.words[p / 64].fetch_or(1 << (p % 64), Ordering::Relaxed);
        }
    }
    pub fn may_contain(&self, kh: &[u8; 32]) -> bool {
        Self::positions(kh)
            .iter()
            .all(|p| self.words[p / 64].load(Ordering::Relaxed) & (1 << (p % 64)) != 0)
    }
}

pub struct StateStore {
    store: Store,
    suite: Suite,
    handle: tokio::runtime::Handle,
    nodes: Mutex<LruCache<NodeKey, Arc<Node>>>,
    values: Mutex<LruCache<[u8; 32], Option<Vec<u8>>>>,
    existing: KeyFilter,
    /// The decided block whose rows are still being written: its writes and tree nodes are
    /// visible to reads (so the next block can execute meanwhile) until `mark_committed`.
    overlay: parking_lot::RwLock<Option<Arc<Overlay>>>,
    /// Highest committed version (block height); u64::MAX before genesis.
    version: AtomicU64,
}

/// State of a decided block not yet in the database.
pub struct Overlay {
    pub version: u64,
    writes: Arc<WriteSet>,
    nodes: Arc<NodeMap>,
}

/// Tree nodes by key, shared (not copied) between a prepared block, the overlay, the rows
/// written to the database and the node cache.
pub type NodeMap = HashMap<NodeKey, Arc<Node>>;

/// A tree update computed for a block, not yet persisted.
pub struct PreparedState {
    pub version: u64,
    pub root: Digest,
    /// The tree nodes this version adds.
    pub nodes: Arc<NodeMap>,
    pub writes: Arc<WriteSet>,
}

struct DbReader<'a> {
    state: &'a StateStore,
    /// Nodes fetched in bulk for the current update (see `StateStore::prefetch`).
    prefetched: Option<&'a NodeMap>,
}

impl TreeReader for DbReader<'_> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        if let Some(n) = self.prefetched.and_then(|p| p.get(node_key)) {
            return Ok(Some(Node::clone(n)));
        }
        if let Some(n) = self.state.nodes.lock().get(node_key) {
            return Ok(Some(Node::clone(n)));
        }
        if let Some(n) = self.state.overlay_node(node_key) {
            return Ok(Some(Node::clone(&n)));
        }
        let key = db_node_key(node_key)?;
        let raw = self.state.handle.block_on(self.state.store.node(&key))?;
        match raw {
            None => Ok(None),
            Some(bytes) => {
                let node: Node = borsh::from_slice(&bytes)?;
                self.state
                    .nodes
                    .lock()
                    .put(node_key.clone(), Arc::new(node.clone()));
                Ok(Some(node))
            }
        }
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        Ok(self
            .state
            .handle
            .block_on(self.state.store.value_at(&key_hash.0, max_version))?)
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("tree restoration is not supported")
    }
}

/// A state proof in the portable form of docs/spec/encoding.md.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateProof {
    pub leaf: Option<ProofLeaf>,
    /// Sibling hashes, bottom (deepest) first.
    pub siblings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProofLeaf {
    pub key_hash: String,
    pub value_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("state tree: {0}")]
    Tree(String),
}

fn tree_err(e: anyhow::Error) -> StateError {
    StateError::Tree(e.to_string())
}

impl StateStore {
    pub fn new(
        store: Store,
        suite: Suite,
        handle: tokio::runtime::Handle,
        committed: Option<u64>,
    ) -> Self {
        Self {
            store,
            suite,
            handle,
            nodes: Mutex::new(LruCache::new(
                NonZeroUsize::new(NODE_CACHE).unwrap_or(NonZeroUsize::MIN),
            )),
            values: Mutex::new(LruCache::new(
                NonZeroUsize::new(VALUE_CACHE).unwrap_or(NonZeroUsize::MIN),
            )),
            version: AtomicU64::new(committed.unwrap_or(u64::MAX)),
            existing: KeyFilter::new(),
            overlay: parking_lot::RwLock::new(None),
        }
    }

    /// Make a decided block's state readable before it is persisted.
    pub fn install_overlay(&self, p: &PreparedState) {
        *self.overlay.write() = Some(Arc::new(Overlay {
            version: p.version,
            writes: p.writes.clone(),
            nodes: p.nodes.clone(),
        }));
    }

    fn overlay_value(&self, full_key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.overlay
            .read()
            .as_ref()
            .and_then(|o| o.writes.get(full_key).cloned())
    }

    fn overlay_node(&self, key: &NodeKey) -> Option<Arc<Node>> {
        self.overlay
            .read()
            .as_ref()
            .and_then(|o| o.nodes.get(key).cloned())
    }

    /// Fill the existing-keys filter from storage (at start).
    pub async fn load_key_filter(&self) -> Result<u64, StateError> {
        let mut n = 0u64;
        self.store
            .for_each_key_hash(20_000, |kh| {
                if let Ok(arr) = <[u8; 32]>::try_from(kh) {
                    self.existing.insert(&arr);
                    n += 1;
                }
            })
            .await?;
        Ok(n)
    }

    pub fn hash_alg(&self) -> HashAlg {
        self.suite.hash()
    }

    pub fn committed_version(&self) -> Option<u64> {
        match self.version.load(Ordering::Acquire) {
            u64::MAX => None,
            v => Some(v),
        }
    }

    pub fn key_hash(&self, full_key: &[u8]) -> [u8; 32] {
        self.hash_alg().digest(full_key).bytes
    }

    /// Latest committed value (blocking; call from a blocking thread).
    pub fn get_latest_blocking(&self, full_key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(v) = self.overlay_value(full_key) {
            return Ok(v);
        }
        let kh = self.key_hash(full_key);
        if !self.existing.may_contain(&kh) {
            return Ok(None);
        }
        if let Some(v) = self.values.lock().get(&kh) {
            return Ok(v.clone());
        }
        let Some(version) = self.committed_version() else {
            return Ok(None);
        };
        let v = self.handle.block_on(self.store.value_at(&kh, version))?;
        self.values.lock().put(kh, v.clone());
        Ok(v)
    }

    /// Latest committed value from async code.
    pub async fn get_latest(
        self: &Arc<Self>,
        full_key: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(v) = self.overlay_value(&full_key) {
            return Ok(v);
        }
        let kh = self.key_hash(&full_key);
        if !self.existing.may_contain(&kh) {
            return Ok(None);
        }
        if let Some(v) = self.values.lock().get(&kh) {
            return Ok(v.clone());
        }
        let Some(version) = self.committed_version() else {
            return Ok(None);
        };
        Ok(self.store.value_at(&kh, version).await?)
    }

    /// Compute the new root for `version` from the block's write set (blocking).
    pub fn prepare(&self, version: u64, writes: WriteSet) -> Result<PreparedState, StateError> {
        let set: Vec<(KeyHash, Option<OwnedValue>)> = writes
            .iter()
            .map(|(k, v)| (KeyHash(self.key_hash(k)), v.clone()))
            .collect();
        let hashes: Vec<[u8; 32]> = set.iter().map(|(k, _)| k.0).collect();
        let started = std::time::Instant::now();
        let prefetched = self.prefetch(version, &hashes)?;
        let prefetch_ms = started.elapsed().as_millis() as u64;
        let reader = DbReader {
            state: self,
            prefetched: Some(&prefetched),
        };
        let (root, batch) = match self.suite {
            Suite::Ed25519Sha256 => put::<Sha256Hasher>(&reader, set, version)?,
            Suite::Sm2Sm3 => put::<Sm3Hasher>(&reader, set, version)?,
        };
        // Keep only the new nodes (one copy, shared from here on); jmt's batch also carries
        // values and stale-node indexes we do not use.
        let nodes: NodeMap = batch
            .node_batch
            .nodes()
            .iter()
            .map(|(k, n)| (k.clone(), Arc::new(n.clone())))
            .collect();
        drop(batch);
        tracing::debug!(
            version,
            prefetch_ms,
            prefetched = prefetched.len(),
            update_ms = started.elapsed().as_millis() as u64 - prefetch_ms,
            new_nodes = nodes.len(),
            "state tree updated"
        );
        Ok(PreparedState {
            version,
            root: Digest {
                alg: self.hash_alg(),
                bytes: root,
            },
            nodes: Arc::new(nodes),
            writes: Arc::new(writes),
        })
    }

    /// Load, level by level, every tree node the update of `version` will visit, with one
    /// batched query per level instead of one database round trip per node. Starting at the
    /// root of `version - 1`, each internal node's children on the paths of `key_hashes` give the
    /// next level's node keys (a child's key is its version plus the parent's nibble path and
    /// the child's nibble). Purely a cache warm-up: anything missed is still read on demand.
    fn prefetch(&self, version: u64, key_hashes: &[[u8; 32]]) -> Result<NodeMap, StateError> {
        let mut out: NodeMap = HashMap::new();
        if version == 0 || key_hashes.is_empty() {
            return Ok(out);
        }
        // (path bytes, nibble count, indexes of the key hashes below) per node key bytes
        let mut level: HashMap<Vec<u8>, (Vec<u8>, usize, Vec<usize>)> = HashMap::new();
        level.insert(
            node_key_bytes(version - 1, &[], 0),
            (vec![], 0, (0..key_hashes.len()).collect()),
        );
        for depth in 0..64usize {
            if level.is_empty() {
                break;
            }
            let mut resolved: Vec<Visit> = Vec::with_capacity(level.len());
            let mut missing: Vec<Vec<u8>> = Vec::new();
            let mut waiting: HashMap<Vec<u8>, Pending> = HashMap::new();
            {
                let mut cache = self.nodes.lock();
                for (kb, (path, nn, idxs)) in level {
                    let Ok(nk) = node_key_from_db(&kb) else {
                        continue;
                    };
                    match cache.get(&nk).cloned().or_else(|| self.overlay_node(&nk)) {
                        Some(n) => resolved.push((nk, n, path, nn, idxs)),
                        None => {
                            missing.push(kb.clone());
                            waiting.insert(kb, (nk, path, nn, idxs));
                        }
                    }
                }
            }
            if !missing.is_empty() {
                for (kb, raw) in self.handle.block_on(self.store.nodes(&missing))? {
                    if let (Some((nk, path, nn, idxs)), Ok(node)) =
                        (waiting.remove(&kb), borsh::from_slice::<Node>(&raw))
                    {
                        resolved.push((nk, Arc::new(node), path, nn, idxs));
                    }
                }
            }
            let mut next: HashMap<Vec<u8>, (Vec<u8>, usize, Vec<usize>)> = HashMap::new();
            for (nk, node, path, nn, idxs) in resolved {
                if let Node::Internal(inner) = &*node {
                    for i in idxs {
                        let nib = nibble_at(&key_hashes[i], depth);
                        if let Some(child) = inner.child(nib.into()) {
                            let (cpath, cnn) = push_nibble(&path, nn, nib);
                            let ckey = node_key_bytes(child.version, &cpath, cnn);
                            next.entry(ckey)
                                .or_insert_with(|| (cpath, cnn, Vec::new()))
                                .2
                                .push(i);
                        }
                    }
                }
                out.insert(nk, node);
            }
            level = next;
        }
        Ok(out)
    }

    /// Rows to persist for a prepared state: (new keys, values, nodes).
    #[allow(clippy::type_complexity)]
    pub fn rows(
        &self,
        p: &PreparedState,
    ) -> Result<
        (
            Vec<(Vec<u8>, String, Vec<u8>)>,
            Vec<(Vec<u8>, Option<Vec<u8>>)>,
            Vec<(Vec<u8>, Vec<u8>)>,
        ),
        StateError,
    > {
        let mut keys = Vec::with_capacity(p.writes.len());
        let mut values = Vec::with_capacity(p.writes.len());
        for (k, v) in p.writes.iter() {
            let kh = self.key_hash(k).to_vec();
            let (contract, raw) = split_state_key(k).unwrap_or(("", k));
            keys.push((kh.clone(), contract.to_string(), raw.to_vec()));
            values.push((kh, v.clone()));
        }
        let mut nodes = Vec::with_capacity(p.nodes.len());
        for (k, n) in p.nodes.iter() {
            nodes.push((
                db_node_key(k).map_err(|e| StateError::Tree(e.to_string()))?,
                borsh::to_vec(&**n).map_err(|e| StateError::Tree(e.to_string()))?,
            ));
        }
        Ok((keys, values, nodes))
    }

    /// After the block's database transaction committed: publish its nodes and values to the
    /// caches and advance the committed version.
    pub fn mark_committed(&self, p: PreparedState) {
        {
            let mut nodes = self.nodes.lock();
            for (k, n) in p.nodes.iter() {
                nodes.put(k.clone(), n.clone());
            }
        }
        {
            let mut values = self.values.lock();
            for (k, v) in p.writes.iter() {
                let kh = self.key_hash(k);
                self.existing.insert(&kh);
                values.put(kh, v.clone());
            }
        }
        self.version.store(p.version, Ordering::Release);
        // Everything the overlay held is now in the caches and the database.
        let mut o = self.overlay.write();
        if o.as_ref().is_some_and(|o| o.version <= p.version) {
            *o = None;
        }
    }

    /// Proof of `full_key`'s value (or absence) at `version` (blocking).
    pub fn prove_blocking(
        &self,
        full_key: &[u8],
        version: u64,
    ) -> Result<(Option<Vec<u8>>, StateProof), StateError> {
        let kh = KeyHash(self.key_hash(full_key));
        let reader = DbReader {
            state: self,
            prefetched: None,
        };
        let encoded = match self.suite {
            Suite::Ed25519Sha256 => {
                let (v, p) = JellyfishMerkleTree::<_, Sha256Hasher>::new(&reader)
                    .get_with_proof(kh, version)
                    .map_err(tree_err)?;
                (
                    v,
                    borsh::to_vec(&p).map_err(|e| StateError::Tree(e.to_string()))?,
                )
            }
            Suite::Sm2Sm3 => {
                let (v, p) = JellyfishMerkleTree::<_, Sm3Hasher>::new(&reader)
                    .get_with_proof(kh, version)
                    .map_err(tree_err)?;
                (
                    v,
                    borsh::to_vec(&p).map_err(|e| StateError::Tree(e.to_string()))?,
                )
            }
        };
        let proof = portable_proof(self.hash_alg(), &encoded.1).map_err(StateError::Tree)?;
        Ok((encoded.0, proof))
    }
}

/// A node on the prefetch frontier: its key, the node, its nibble path (bytes, count) and the
/// indexes of the written key hashes that pass through it.
type Visit = (NodeKey, Arc<Node>, Vec<u8>, usize, Vec<usize>);
/// A frontier node not in the cache yet: key, nibble path (bytes, count), key-hash indexes.
type Pending = (NodeKey, Vec<u8>, usize, Vec<usize>);

/// Database key of a tree node: the version big-endian, then the borsh encoding of the nibble
/// path. Leading with the version makes each block's nodes sort together at the end of the
/// index, so inserting them appends instead of touching pages all over the B-tree.
fn db_node_key(k: &NodeKey) -> Result<Vec<u8>, std::io::Error> {
    let mut v = k.version().to_be_bytes().to_vec();
    v.extend_from_slice(&borsh::to_vec(k.nibble_path())?);
    Ok(v)
}

fn node_key_from_db(b: &[u8]) -> Result<NodeKey, std::io::Error> {
    let (version, path) = b
        .split_at_checked(8)
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let mut borsh_key = Vec::with_capacity(b.len());
    borsh_key.extend(version.iter().rev());
    borsh_key.extend_from_slice(path);
    borsh::from_slice(&borsh_key)
}

/// `db_node_key` built from parts (nibble count u64 LE, path bytes with a u32 LE length, as
/// borsh encodes a `NibblePath`), because jmt does not expose path construction.
fn node_key_bytes(version: u64, path: &[u8], num_nibbles: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + path.len());
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(&(num_nibbles as u64).to_le_bytes());
    v.extend_from_slice(&(path.len() as u32).to_le_bytes());
    v.extend_from_slice(path);
    v
}

fn nibble_at(key: &[u8; 32], depth: usize) -> u8 {
    let b = key[depth / 2];
    if depth.is_multiple_of(2) {
        b >> 4
    } else {
        b & 0x0f
    }
}

fn push_nibble(path: &[u8], num_nibbles: usize, nib: u8) -> (Vec<u8>, usize) {
    let mut p = path.to_vec();
    if num_nibbles.is_multiple_of(2) {
        p.push(nib << 4);
    } else if let Some(last) = p.last_mut() {
        *last |= nib;
    }
    (p, num_nibbles + 1)
}

fn put<H: jmt::SimpleHasher>(
    reader: &DbReader<'_>,
    set: Vec<(KeyHash, Option<OwnedValue>)>,
    version: u64,
) -> Result<([u8; 32], TreeUpdateBatch), StateError> {
    let tree = JellyfishMerkleTree::<_, H>::new(reader);
    // jmt silently starts from an empty tree when the parent root is missing; refuse instead.
    if version > 0
        && tree
            .get_root_hash_option(version - 1)
            .map_err(tree_err)?
            .is_none()
    {
        return Err(StateError::Tree(format!(
            "state root of version {} is missing",
            version - 1
        )));
    }
    let (root, batch) = tree.put_value_set(set, version).map_err(tree_err)?;
    Ok((root.0, batch))
}

/// Convert jmt's borsh-encoded `SparseMerkleProof` into the portable form: the leaf (if any)
/// and each sibling reduced to its hash. Layout (jmt 0.12): Option<(key_hash, value_hash)>,
/// then u32-LE count of siblings, each a tag (0 = null, 1 = internal(left, right),
/// 2 = leaf(key_hash, value_hash)).
fn portable_proof(alg: HashAlg, b: &[u8]) -> Result<StateProof, String> {
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = b.get(pos..pos + n).ok_or("truncated jmt proof")?;
        pos += n;
        Ok(s)
    };
    let leaf = match take(1)?[0] {
        0 => None,
        1 => {
            let k = take(32)?.to_vec();
            let v = take(32)?.to_vec();
            Some(ProofLeaf {
                key_hash: hex::encode(k),
                value_hash: hex::encode(v),
            })
        }
        t => return Err(format!("bad leaf tag {t}")),
    };
    let n_bytes = take(4)?;
    let n = u32::from_le_bytes([n_bytes[0], n_bytes[1], n_bytes[2], n_bytes[3]]) as usize;
    let mut siblings = Vec::with_capacity(n);
    for _ in 0..n {
        let h = match take(1)?[0] {
            0 => PLACEHOLDER,
            1 => {
                let l = take(32)?.to_vec();
                let r = take(32)?.to_vec();
                alg.digest_parts(&[INTERNAL_DOMAIN, &l, &r]).bytes
            }
            2 => {
                let k = take(32)?.to_vec();
                let v = take(32)?.to_vec();
                alg.digest_parts(&[LEAF_DOMAIN, &k, &v]).bytes
            }
            t => return Err(format!("bad sibling tag {t}")),
        };
        siblings.push(hex::encode(h));
    }
    Ok(StateProof { leaf, siblings })
}

fn hex32(s: &str) -> Result<[u8; 32], String> {
    let v = hex::decode(s).map_err(|_| "invalid hex in proof".to_string())?;
    v.try_into()
        .map_err(|_| "proof hash is not 32 bytes".to_string())
}

fn bit(key: &[u8; 32], i: usize) -> bool {
    key[i / 8] & (0x80 >> (i % 8)) != 0
}

/// Verify a portable state proof: `value` (None = absent) for `full_key` under `root`.
/// Same algorithm as jmt's `SparseMerkleProof::verify`, written out so that browsers and other
/// languages can follow docs/spec/encoding.md.
pub fn verify_state_proof(
    alg: HashAlg,
    root: &[u8; 32],
    full_key: &[u8],
    value: Option<&[u8]>,
    proof: &StateProof,
) -> Result<(), String> {
    if proof.siblings.len() > 256 {
        return Err("too many siblings".into());
    }
    let key_hash = alg.digest(full_key).bytes;
    let leaf = match &proof.leaf {
        Some(l) => Some((hex32(&l.key_hash)?, hex32(&l.value_hash)?)),
        None => None,
    };
    let n = proof.siblings.len();
    match (value, leaf) {
        (Some(v), Some((lk, lv))) => {
            if lk != key_hash {
                return Err("proof is for another key".into());
            }
            if lv != alg.digest(v).bytes {
                return Err("value does not match the proof".into());
            }
        }
        (Some(_), None) => return Err("expected an inclusion proof".into()),
        (None, Some((lk, _))) => {
            if lk == key_hash {
                return Err("the key exists; absence cannot be proven".into());
            }
            let common = (0..256)
                .take_while(|&i| bit(&lk, i) == bit(&key_hash, i))
                .count();
            if common < n {
                return Err("the proof's leaf is not on the key's path".into());
            }
        }
        (None, None) => {}
    }
    let mut cur = match leaf {
        Some((lk, lv)) => alg.digest_parts(&[LEAF_DOMAIN, &lk, &lv]).bytes,
        None => PLACEHOLDER,
    };
    for (i, sib) in proof.siblings.iter().enumerate() {
        let s = hex32(sib)?;
        let depth = n - 1 - i;
        cur = if bit(&key_hash, depth) {
            alg.digest_parts(&[INTERNAL_DOMAIN, &s, &cur]).bytes
        } else {
            alg.digest_parts(&[INTERNAL_DOMAIN, &cur, &s]).bytes
        };
    }
    if &cur == root {
        Ok(())
    } else {
        Err("state root does not match".into())
    }
}

/// `StateRead` over the latest committed state, for block execution on a blocking thread.
pub struct CommittedView<'a>(pub &'a StateStore);

impl StateRead for CommittedView<'_> {
    fn get(&self, full_key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.0
            .get_latest_blocking(full_key)
            .map_err(|e| e.to_string())
    }
}

/// `verify_state_proof` against jmt's own verifier, on real trees built by jmt.
#[cfg(test)]
mod node_key_tests {
    use super::*;

    #[test]
    fn database_node_keys_round_trip_and_match_the_hand_built_form() {
        let nk: NodeKey = borsh::from_slice(&{
            // version 7, 3 nibbles: path bytes ab c0
            let mut b = 7u64.to_le_bytes().to_vec();
            b.extend_from_slice(&3u64.to_le_bytes());
            b.extend_from_slice(&2u32.to_le_bytes());
            b.extend_from_slice(&[0xab, 0xc0]);
            b
        })
        .unwrap();
        let db = db_node_key(&nk).unwrap();
        assert_eq!(db, node_key_bytes(7, &[0xab, 0xc0], 3));
        assert_eq!(node_key_from_db(&db).unwrap(), nk);
        let (p, n) = push_nibble(&[0xab], 2, 0xc);
        assert_eq!((p.as_slice(), n), (&[0xab, 0xc0][..], 3));
        // later versions sort after earlier ones
        assert!(node_key_bytes(8, &[], 0) > node_key_bytes(7, &[0xff], 2));
    }
}

#[cfg(test)]
mod proof_props {
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use jmt::RootHash;
    use jmt::SimpleHasher;
    use jmt::proof::SparseMerkleProof;
    use proptest::prelude::*;

    use super::*;

    /// The tree's storage in memory, filled from each version's `TreeUpdateBatch`.
    #[derive(Default)]
    struct MemTree {
        nodes: HashMap<NodeKey, Node>,
        values: BTreeMap<(KeyHash, Version), Option<OwnedValue>>,
    }

    impl MemTree {
        fn apply(&mut self, batch: &TreeUpdateBatch) {
            for (k, n) in batch.node_batch.nodes() {
                self.nodes.insert(k.clone(), n.clone());
            }
            for ((version, kh), v) in batch.node_batch.values() {
                self.values.insert((*kh, *version), v.clone());
            }
        }
    }

    impl TreeReader for MemTree {
        fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
            Ok(self.nodes.get(node_key).cloned())
        }
        fn get_value_option(
            &self,
            max_version: Version,
            key_hash: KeyHash,
        ) -> anyhow::Result<Option<OwnedValue>> {
            Ok(self
                .values
                .range((key_hash, 0)..=(key_hash, max_version))
                .next_back()
                .and_then(|(_, v)| v.clone()))
        }
        fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
            anyhow::bail!("not needed")
        }
    }

    type Versions = Vec<BTreeMap<Vec<u8>, Option<Vec<u8>>>>;

    /// Build the tree version by version; returns the storage and each version's root.
    fn build<H: SimpleHasher>(alg: HashAlg, versions: &Versions) -> (MemTree, Vec<[u8; 32]>) {
        let mut mem = MemTree::default();
        let mut roots = Vec::new();
        for (v, writes) in versions.iter().enumerate() {
            let set: Vec<(KeyHash, Option<OwnedValue>)> = writes
                .iter()
                .map(|(k, val)| (KeyHash(alg.digest(k).bytes), val.clone()))
                .collect();
            let (root, batch) = JellyfishMerkleTree::<_, H>::new(&mem)
                .put_value_set(set, v as Version)
                .unwrap();
            mem.apply(&batch);
            roots.push(root.0);
        }
        (mem, roots)
    }

    fn portable<H: SimpleHasher>(alg: HashAlg, p: &SparseMerkleProof<H>) -> StateProof {
        portable_proof(alg, &borsh::to_vec(p).unwrap()).unwrap()
    }

    fn flip_hex(s: &str, bit: usize) -> String {
        let mut b = hex::decode(s).unwrap();
        let i = bit / 8 % b.len();
        b[i] ^= 0x80 >> (bit % 8);
        hex::encode(b)
    }

    /// For every probed key: ours and jmt's verifier agree on the true claim, on false claims
    /// and on a wrong root; and every single-bit change to the proof or value is rejected.
    fn check_agreement<H: SimpleHasher>(
        alg: HashAlg,
        versions: &Versions,
        probes: &[Vec<u8>],
        bit: usize,
    ) -> Result<(), TestCaseError> {
        let (mem, roots) = build::<H>(alg, versions);
        let tree = JellyfishMerkleTree::<_, H>::new(&mem);
        for (version, root) in roots.iter().enumerate() {
            let version = version as Version;
            for key in probes {
                let kh = KeyHash(alg.digest(key).bytes);
                let (value, proof) = tree.get_with_proof(kh, version).unwrap();
                let p = portable(alg, &proof);
                let mut wrong_root = *root;
                wrong_root[bit % 32] ^= 1;
                let mut other_value = value.clone().unwrap_or_default();
                other_value.push(bit as u8);
                let claims: Vec<Option<Vec<u8>>> =
                    vec![value.clone(), None, Some(other_value), Some(vec![])];
                for claim in &claims {
                    for r in [*root, wrong_root] {
                        let theirs = proof.verify(RootHash(r), kh, claim.as_ref()).is_ok();
                        let ours = verify_state_proof(alg, &r, key, claim.as_deref(), &p).is_ok();
                        prop_assert_eq!(ours, theirs, "claim {:?} root ok {}", claim, r == *root);
                    }
                }
                // The true claim holds.
                prop_assert!(verify_state_proof(alg, root, key, value.as_deref(), &p).is_ok());
                // Tampering with any part of the proof breaks it.
                for i in 0..p.siblings.len() {
                    let mut bad = p.clone();
                    bad.siblings[i] = flip_hex(&bad.siblings[i], bit);
                    prop_assert!(
                        verify_state_proof(alg, root, key, value.as_deref(), &bad).is_err(),
                        "sibling {}",
                        i
                    );
                }
                if let Some(leaf) = &p.leaf {
                    let mut bad = p.clone();
                    bad.leaf.as_mut().unwrap().value_hash = flip_hex(&leaf.value_hash, bit);
                    prop_assert!(
                        verify_state_proof(alg, root, key, value.as_deref(), &bad).is_err()
                    );
                    let mut bad = p.clone();
                    bad.leaf.as_mut().unwrap().key_hash = flip_hex(&leaf.key_hash, bit);
                    prop_assert!(
                        verify_state_proof(alg, root, key, value.as_deref(), &bad).is_err()
                    );
                    // Dropping the leaf turns it into a claim about an empty subtree: rejected.
                    let mut bad = p.clone();
                    bad.leaf = None;
                    prop_assert!(
                        verify_state_proof(alg, root, key, value.as_deref(), &bad).is_err()
                    );
                }
                if !p.siblings.is_empty() {
                    let mut bad = p.clone();
                    bad.siblings.pop();
                    prop_assert!(
                        verify_state_proof(alg, root, key, value.as_deref(), &bad).is_err()
                    );
                    let mut bad = p.clone();
                    bad.siblings.remove(0);
                    prop_assert!(
                        verify_state_proof(alg, root, key, value.as_deref(), &bad).is_err()
                    );
                }
                let mut bad = p.clone();
                bad.siblings.push(hex::encode(PLACEHOLDER));
                prop_assert!(verify_state_proof(alg, root, key, value.as_deref(), &bad).is_err());
                if let Some(v) = &value
                    && !v.is_empty()
                {
                    let mut bv = v.clone();
                    let i = (bit / 8) % v.len();
                    bv[i] ^= 0x80 >> (bit % 8);
                    prop_assert!(verify_state_proof(alg, root, key, Some(&bv), &p).is_err());
                }
            }
        }
        Ok(())
    }

    fn versions() -> impl Strategy<Value = (Versions, Vec<Vec<u8>>)> {
        let key = prop::collection::vec(any::<u8>(), 1..12);
        (
            prop::collection::btree_set(key.clone(), 0..40),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 40),
            prop::collection::vec(any::<u8>(), 40),
            prop::collection::vec(key, 0..6),
        )
            .prop_map(|(keys, vals, ops, absent)| {
                let keys: Vec<Vec<u8>> = keys.into_iter().collect();
                // version 0: insert every key
                let v0: BTreeMap<_, _> = keys
                    .iter()
                    .zip(&vals)
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect();
                // version 1: update, delete or keep each key
                let mut v1 = BTreeMap::new();
                for (i, k) in keys.iter().enumerate() {
                    match ops[i] % 3 {
                        0 => {
                            let mut nv = vals[i].clone();
                            nv.push(ops[i]);
                            v1.insert(k.clone(), Some(nv));
                        }
                        1 => {
                            v1.insert(k.clone(), None);
                        }
                        _ => {}
                    }
                }
                let mut probes: BTreeSet<Vec<u8>> = keys.into_iter().collect();
                probes.extend(absent);
                (vec![v0, v1], probes.into_iter().collect())
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn sha256_state_proofs_agree_with_jmt((vs, probes) in versions(), bit in 0usize..256) {
            check_agreement::<Sha256Hasher>(HashAlg::Sha256, &vs, &probes, bit)?;
        }

        #[test]
        fn sm3_state_proofs_agree_with_jmt((vs, probes) in versions(), bit in 0usize..256) {
            check_agreement::<Sm3Hasher>(HashAlg::Sm3, &vs, &probes, bit)?;
        }
    }

    /// A proof for one key is not a proof for another, and a proof under one hash algorithm does
    /// not verify under the other.
    #[test]
    fn proofs_are_bound_to_key_and_algorithm() {
        let mut v0 = BTreeMap::new();
        for i in 0..20u8 {
            v0.insert(vec![i], Some(vec![i; 3]));
        }
        let vs = vec![v0];
        let (mem, roots) = build::<Sha256Hasher>(HashAlg::Sha256, &vs);
        let tree = JellyfishMerkleTree::<_, Sha256Hasher>::new(&mem);
        let kh = KeyHash(HashAlg::Sha256.digest(&[3u8]).bytes);
        let (value, proof) = tree.get_with_proof(kh, 0).unwrap();
        assert_eq!(value, Some(vec![3u8; 3]));
        let p = portable(HashAlg::Sha256, &proof);
        assert!(verify_state_proof(HashAlg::Sha256, &roots[0], &[3], Some(&[3, 3, 3]), &p).is_ok());
        assert!(
            verify_state_proof(HashAlg::Sha256, &roots[0], &[4], Some(&[3, 3, 3]), &p).is_err()
        );
        assert!(verify_state_proof(HashAlg::Sha256, &roots[0], &[4], None, &p).is_err());
        assert!(verify_state_proof(HashAlg::Sm3, &roots[0], &[3], Some(&[3, 3, 3]), &p).is_err());
        // Malformed hex and over-long proofs are refused, not panicked on.
        let mut bad = p.clone();
        bad.siblings[0] = "zz".into();
        assert!(
            verify_state_proof(HashAlg::Sha256, &roots[0], &[3], Some(&[3, 3, 3]), &bad).is_err()
        );
        let mut bad = p.clone();
        bad.siblings = vec![hex::encode(PLACEHOLDER); 257];
        assert!(
            verify_state_proof(HashAlg::Sha256, &roots[0], &[3], Some(&[3, 3, 3]), &bad).is_err()
        );
        assert!(portable_proof(HashAlg::Sha256, &[1, 0]).is_err());
        assert!(portable_proof(HashAlg::Sha256, &[9]).is_err());
    }
}
