//! The authenticated state: a Jellyfish Merkle tree (jmt crate) whose version is the block
//! height, persisted through `Store`. Tree nodes and latest values are cached in bounded LRUs.
//!
//! jmt's storage traits are synchronous, so tree updates and proofs run on blocking threads and
//! reach the async database with `Handle::block_on`.

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
use crate::storage::{Store, StorageError};

pub const PLACEHOLDER: [u8; 32] = *b"SPARSE_MERKLE_PLACEHOLDER_HASH__";
pub const LEAF_DOMAIN: &[u8] = b"JMT::LeafNode";
pub const INTERNAL_DOMAIN: &[u8] = b"JMT::IntrnalNode";

const NODE_CACHE: usize = 400_000;
const VALUE_CACHE: usize = 300_000;

pub struct StateStore {
    store: Store,
    suite: Suite,
    handle: tokio::runtime::Handle,
    nodes: Mutex<LruCache<NodeKey, Node>>,
    values: Mutex<LruCache<[u8; 32], Option<Vec<u8>>>>,
    /// Highest committed version (block height); u64::MAX before genesis.
    version: AtomicU64,
}

/// A tree update computed for a block, not yet persisted.
pub struct PreparedState {
    pub version: u64,
    pub root: Digest,
    pub batch: TreeUpdateBatch,
    pub writes: WriteSet,
}

struct DbReader<'a> {
    state: &'a StateStore,
}

impl TreeReader for DbReader<'_> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        if let Some(n) = self.state.nodes.lock().get(node_key) {
            return Ok(Some(n.clone()));
        }
        let key = borsh::to_vec(node_key)?;
        let raw = self.state.handle.block_on(self.state.store.node(&key))?;
        match raw {
            None => Ok(None),
            Some(bytes) => {
                let node: Node = borsh::from_slice(&bytes)?;
                self.state.nodes.lock().put(node_key.clone(), node.clone());
                Ok(Some(node))
            }
        }
    }

    fn get_value_option(&self, max_version: Version, key_hash: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
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
    pub fn new(store: Store, suite: Suite, handle: tokio::runtime::Handle, committed: Option<u64>) -> Self {
        Self {
            store,
            suite,
            handle,
            nodes: Mutex::new(LruCache::new(NonZeroUsize::new(NODE_CACHE).unwrap_or(NonZeroUsize::MIN))),
            values: Mutex::new(LruCache::new(NonZeroUsize::new(VALUE_CACHE).unwrap_or(NonZeroUsize::MIN))),
            version: AtomicU64::new(committed.unwrap_or(u64::MAX)),
        }
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
        let kh = self.key_hash(full_key);
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
    pub async fn get_latest(self: &Arc<Self>, full_key: Vec<u8>) -> Result<Option<Vec<u8>>, StateError> {
        let kh = self.key_hash(&full_key);
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
        let reader = DbReader { state: self };
        let (root, batch) = match self.suite {
            Suite::Ed25519Sha256 => put::<Sha256Hasher>(&reader, set, version)?,
            Suite::Sm2Sm3 => put::<Sm3Hasher>(&reader, set, version)?,
        };
        Ok(PreparedState {
            version,
            root: Digest {
                alg: self.hash_alg(),
                bytes: root,
            },
            batch,
            writes,
        })
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
        for (k, v) in &p.writes {
            let kh = self.key_hash(k).to_vec();
            let (contract, raw) = split_state_key(k).unwrap_or(("", k));
            keys.push((kh.clone(), contract.to_string(), raw.to_vec()));
            values.push((kh, v.clone()));
        }
        let mut nodes = Vec::with_capacity(p.batch.node_batch.nodes().len());
        for (k, n) in p.batch.node_batch.nodes() {
            nodes.push((
                borsh::to_vec(k).map_err(|e| StateError::Tree(e.to_string()))?,
                borsh::to_vec(n).map_err(|e| StateError::Tree(e.to_string()))?,
            ));
        }
        Ok((keys, values, nodes))
    }

    /// After the block's database transaction committed: publish its nodes and values to the
    /// caches and advance the committed version.
    pub fn mark_committed(&self, p: PreparedState) {
        {
            let mut nodes = self.nodes.lock();
            for (k, n) in p.batch.node_batch.nodes() {
                nodes.put(k.clone(), n.clone());
            }
        }
        {
            let mut values = self.values.lock();
            for (k, v) in p.writes {
                values.put(self.key_hash(&k), v);
            }
        }
        self.version.store(p.version, Ordering::Release);
    }

    /// Proof of `full_key`'s value (or absence) at `version` (blocking).
    pub fn prove_blocking(&self, full_key: &[u8], version: u64) -> Result<(Option<Vec<u8>>, StateProof), StateError> {
        let kh = KeyHash(self.key_hash(full_key));
        let reader = DbReader { state: self };
        let encoded = match self.suite {
            Suite::Ed25519Sha256 => {
                let (v, p) = JellyfishMerkleTree::<_, Sha256Hasher>::new(&reader)
                    .get_with_proof(kh, version)
                    .map_err(tree_err)?;
                (v, borsh::to_vec(&p).map_err(|e| StateError::Tree(e.to_string()))?)
            }
            Suite::Sm2Sm3 => {
                let (v, p) = JellyfishMerkleTree::<_, Sm3Hasher>::new(&reader)
                    .get_with_proof(kh, version)
                    .map_err(tree_err)?;
                (v, borsh::to_vec(&p).map_err(|e| StateError::Tree(e.to_string()))?)
            }
        };
        let proof = portable_proof(self.hash_alg(), &encoded.1).map_err(StateError::Tree)?;
        Ok((encoded.0, proof))
    }
}

fn put<H: jmt::SimpleHasher>(
    reader: &DbReader<'_>,
    set: Vec<(KeyHash, Option<OwnedValue>)>,
    version: u64,
) -> Result<([u8; 32], TreeUpdateBatch), StateError> {
    let tree = JellyfishMerkleTree::<_, H>::new(reader);
    // jmt silently starts from an empty tree when the parent root is missing; refuse instead.
    if version > 0 && tree.get_root_hash_option(version - 1).map_err(tree_err)?.is_none() {
        return Err(StateError::Tree(format!("state root of version {} is missing", version - 1)));
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
    v.try_into().map_err(|_| "proof hash is not 32 bytes".to_string())
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
            let common = (0..256).take_while(|&i| bit(&lk, i) == bit(&key_hash, i)).count();
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
        self.0.get_latest_blocking(full_key).map_err(|e| e.to_string())
    }
}
