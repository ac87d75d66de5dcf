//! Native contracts. A contract is deterministic Rust: it sees only its call context (block
//! height and time, a seed derived from the previous block hash, the sender, its own namespaced
//! state, read-only views of other contracts' state) and may not do IO, read the wall clock or
//! draw randomness. It rejects bad input with a stable error code; the executor then rolls back
//! that transaction's writes only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crypto::{Digest, HashAlg, PublicKey};
use crate::types::Event;

/// Error a contract returns. `Rejected` becomes a failed receipt with a stable code; `Fatal`
/// means the node itself could not read state and aborts the whole block (never a receipt,
/// because the outcome would depend on the node, not on the chain).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("{code}: {message}")]
    Rejected { code: String, message: String },
    #[error("storage failure: {0}")]
    Fatal(String),
}

impl ContractError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self::Rejected {
            code: code.to_string(),
            message: message.into(),
        }
    }
    pub fn invalid_args(message: impl Into<String>) -> Self {
        Self::new("invalid_args", message)
    }
    pub fn not_permitted(message: impl Into<String>) -> Self {
        Self::new("not_permitted", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("not_found", message)
    }
}

/// Synchronous read access to committed state (plus whatever the block wrote so far).
pub trait StateRead: Send + Sync {
    fn get(&self, full_key: &[u8]) -> Result<Option<Vec<u8>>, String>;
}

/// The namespaced state key: contract name, a 0x00 separator, then the contract's own key.
pub fn state_key(contract: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(contract.len() + 1 + key.len());
    k.extend_from_slice(contract.as_bytes());
    k.push(0);
    k.extend_from_slice(key);
    k
}

/// Split a full state key back into (contract, key).
pub fn split_state_key(full: &[u8]) -> Option<(&str, &[u8])> {
    let pos = full.iter().position(|b| *b == 0)?;
    let contract = std::str::from_utf8(&full[..pos]).ok()?;
    Some((contract, &full[pos + 1..]))
}

/// Writes made during a block, layered over committed state. Each transaction gets its own
/// layer on top, merged only when the transaction succeeds.
pub type WriteSet = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

#[derive(Debug, Clone)]
pub struct BlockInfo {
    pub chain_id: String,
    pub height: u64,
    pub time_ms: u64,
    pub prev_hash: Digest,
}

pub struct CallContext<'a> {
    pub block: &'a BlockInfo,
    pub tx_id: Digest,
    pub sender: PublicKey,
    contract: &'a str,
    base: &'a dyn StateRead,
    block_writes: &'a WriteSet,
    tx_writes: WriteSet,
    events: Vec<Event>,
    registry: &'a ContractRegistry,
    /// The sender's member record once looked up in this transaction: every transaction checks
    /// it before its contract runs, and most contracts check it again for their permissions.
    /// Cleared by any write of the system contract, the only one that can change it.
    sender_member: std::cell::OnceCell<crate::system::Member>,
}

impl<'a> CallContext<'a> {
    pub(crate) fn new(
        block: &'a BlockInfo,
        tx_id: Digest,
        sender: PublicKey,
        contract: &'a str,
        base: &'a dyn StateRead,
        block_writes: &'a WriteSet,
        registry: &'a ContractRegistry,
    ) -> Self {
        Self {
            block,
            tx_id,
            sender,
            contract,
            base,
            block_writes,
            tx_writes: WriteSet::new(),
            events: Vec::new(),
            registry,
            sender_member: std::cell::OnceCell::new(),
        }
    }

    pub(crate) fn cached_sender_member(&self) -> Option<&crate::system::Member> {
        self.sender_member.get()
    }

    pub(crate) fn cache_sender_member(&self, m: &crate::system::Member) {
        let _ = self.sender_member.set(m.clone());
    }

    fn written(&mut self) {
        if self.contract == crate::system::NAME {
            self.sender_member.take();
        }
    }

    pub(crate) fn into_parts(self) -> (WriteSet, Vec<Event>) {
        (self.tx_writes, self.events)
    }

    pub fn contract(&self) -> &str {
        self.contract
    }

    pub fn hash_alg(&self) -> HashAlg {
        self.block.prev_hash.alg
    }

    fn read_full(&self, full: &[u8]) -> Result<Option<Vec<u8>>, ContractError> {
        if let Some(v) = self.tx_writes.get(full) {
            return Ok(v.clone());
        }
        if let Some(v) = self.block_writes.get(full) {
            return Ok(v.clone());
        }
        self.base.get(full).map_err(ContractError::Fatal)
    }

    /// Read a key of this contract's namespace.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ContractError> {
        self.read_full(&state_key(self.contract, key))
    }

    /// Read another contract's state (read-only: contracts can only write their own namespace).
    pub fn get_in(&self, contract: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ContractError> {
        self.read_full(&state_key(contract, key))
    }

    pub fn set(&mut self, key: &[u8], value: Vec<u8>) {
        self.tx_writes
            .insert(state_key(self.contract, key), Some(value));
        self.written();
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.tx_writes.insert(state_key(self.contract, key), None);
        self.written();
    }

    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ContractError> {
        decode_json(self.get(key.as_bytes())?)
    }

    pub fn get_json_in<T: DeserializeOwned>(
        &self,
        contract: &str,
        key: &str,
    ) -> Result<Option<T>, ContractError> {
        decode_json(self.get_in(contract, key.as_bytes())?)
    }

    pub fn set_json<T: Serialize>(&mut self, key: &str, value: &T) -> Result<(), ContractError> {
        let bytes = serde_json::to_vec(value).map_err(|e| ContractError::Fatal(e.to_string()))?;
        self.set(key.as_bytes(), bytes);
        Ok(())
    }

    pub fn emit<T: Serialize>(&mut self, kind: &str, data: &T) -> Result<(), ContractError> {
        let data = serde_json::to_vec(data).map_err(|e| ContractError::Fatal(e.to_string()))?;
        self.events.push(Event {
            contract: self.contract.to_string(),
            kind: kind.to_string(),
            data,
        });
        Ok(())
    }

    /// Deterministic randomness for this transaction, derived from the previous block hash and
    /// the transaction id: every node derives the same value, and nobody knows it before the
    /// previous block is decided.
    pub fn random_seed(&self) -> Digest {
        self.hash_alg().digest_parts(&[
            b"trellis/random/v1\0",
            &self.block.prev_hash.bytes,
            &self.tx_id.bytes,
        ])
    }

    /// Whether the node binary carries `contract` at `version` (used by governance before
    /// switching a contract version, so a vote can never point the chain at missing code).
    pub fn contract_available(&self, contract: &str, version: u32) -> bool {
        self.registry.get(contract, version).is_some()
    }
}

fn decode_json<T: DeserializeOwned>(v: Option<Vec<u8>>) -> Result<Option<T>, ContractError> {
    match v {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| ContractError::Fatal(format!("corrupt state value: {e}"))),
    }
}

/// Parse JSON call arguments, turning any error into `invalid_args` with serde's message
/// (which names the offending field).
pub fn parse_args<T: DeserializeOwned>(args: &[u8]) -> Result<T, ContractError> {
    serde_json::from_slice(args).map_err(|e| ContractError::invalid_args(e.to_string()))
}

/// A native contract. Implementations must be deterministic.
pub trait Contract: Send + Sync + 'static {
    /// Namespace and address of the contract, e.g. `system`.
    fn name(&self) -> &'static str;
    /// Code version; governance selects which registered version is active.
    fn version(&self) -> u32 {
        1
    }
    /// Method names accepted by `call` (checked at admission, so unknown methods never reach
    /// a block).
    fn methods(&self) -> &'static [&'static str];
    fn call(
        &self,
        ctx: &mut CallContext<'_>,
        method: &str,
        args: &[u8],
    ) -> Result<(), ContractError>;
}

/// All contract code compiled into this node, by name and version.
#[derive(Default, Clone)]
pub struct ContractRegistry {
    by_name: HashMap<&'static str, BTreeMap<u32, Arc<dyn Contract>>>,
}

impl ContractRegistry {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn register(&mut self, c: Arc<dyn Contract>) {
        self.by_name
            .entry(c.name())
            .or_default()
            .insert(c.version(), c);
    }
    pub fn get(&self, name: &str, version: u32) -> Option<&Arc<dyn Contract>> {
        self.by_name.get(name)?.get(&version)
    }
    /// The newest version of each contract (what genesis activates).
    pub fn latest(&self) -> Vec<(&'static str, u32)> {
        let mut v: Vec<_> = self
            .by_name
            .iter()
            .filter_map(|(n, m)| m.keys().next_back().map(|ver| (*n, *ver)))
            .collect();
        v.sort();
        v
    }
    /// Is `method` a method of any registered version of `contract`?
    pub fn knows_method(&self, contract: &str, method: &str) -> Result<(), (&'static str, String)> {
        let versions = self.by_name.get(contract).ok_or_else(|| {
            (
                "unknown_contract",
                format!("no contract named `{contract}` on this chain"),
            )
        })?;
        if versions.values().any(|c| c.methods().contains(&method)) {
            Ok(())
        } else {
            Err((
                "unknown_method",
                format!("contract `{contract}` has no method `{method}`"),
            ))
        }
    }
    pub fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.by_name.keys().copied().collect();
        v.sort();
        v
    }
}
