//! An in-memory ledger: genesis plus blocks executed by the real execution engine and the real
//! contracts, with state kept in a map instead of the database and the state tree. Apps use it
//! to test their contract rules (permissions, multi-party flows, rollbacks) quickly and
//! deterministically; the database, tree and consensus are covered by the node's own tests.

use std::collections::{BTreeMap, HashMap};

use serde::de::DeserializeOwned;

use crate::contract::{BlockInfo, ContractRegistry, StateRead, state_key};
use crate::crypto::{Digest, PublicKey, SigningKey, Suite};
use crate::execution::{Mode, execute_block};
use crate::genesis::Genesis;
use crate::types::{Receipt, SignedTx, build_tx};

struct MapState<'a>(&'a BTreeMap<Vec<u8>, Vec<u8>>);

impl StateRead for MapState<'_> {
    fn get(&self, full_key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.get(full_key).cloned())
    }
}

pub struct Ledger {
    chain_id: String,
    suite: Suite,
    registry: ContractRegistry,
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    height: u64,
    time_ms: u64,
    prev_hash: Digest,
    nonces: HashMap<PublicKey, u64>,
}

impl Ledger {
    /// The state after `genesis`, with `registry`'s contracts.
    pub fn new(genesis: &Genesis, registry: ContractRegistry) -> Result<Self, String> {
        let (writes, header) = genesis.build(&registry).map_err(|e| e.to_string())?;
        let mut state = BTreeMap::new();
        for (k, v) in writes {
            if let Some(v) = v {
                state.insert(k, v);
            }
        }
        Ok(Self {
            chain_id: genesis.chain_id.clone(),
            suite: genesis.suite,
            registry,
            state,
            height: 0,
            time_ms: genesis.genesis_time_ms,
            prev_hash: genesis.suite.hash().digest(&header.encode()),
            nonces: HashMap::new(),
        })
    }

    pub fn height(&self) -> u64 {
        self.height
    }

    /// Block time of the last block.
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    /// The next block will be `ms` later than the last one (default one second).
    pub fn advance_time(&mut self, ms: u64) {
        self.time_ms += ms;
    }

    /// Executes one block with `txs`; returns their receipts.
    pub fn block(&mut self, txs: Vec<SignedTx>) -> Result<Vec<Receipt>, String> {
        let info = BlockInfo {
            chain_id: self.chain_id.clone(),
            height: self.height + 1,
            time_ms: self.time_ms + 1000,
            prev_hash: self.prev_hash,
        };
        let executed = execute_block(
            &info,
            &MapState(&self.state),
            &self.registry,
            txs,
            Mode::Verify,
        )
        .map_err(|e| e.to_string())?;
        for (k, v) in executed.writes {
            match v {
                Some(v) => self.state.insert(k, v),
                None => self.state.remove(&k),
            };
        }
        self.height = info.height;
        self.time_ms = info.time_ms;
        self.prev_hash = self.suite.hash().digest_parts(&[
            self.prev_hash.to_hex().as_bytes(),
            &info.height.to_be_bytes(),
        ]);
        Ok(executed.receipts)
    }

    /// A transaction from `key` with its next nonce (not yet executed).
    pub fn tx(
        &mut self,
        key: &SigningKey,
        contract: &str,
        method: &str,
        args: &serde_json::Value,
    ) -> SignedTx {
        let nonce = self.nonces.entry(key.public_key()).or_insert(0);
        let tx = build_tx(
            self.suite,
            &self.chain_id,
            key,
            *nonce,
            self.time_ms + 3_600_000,
            contract,
            method,
            serde_json::to_vec(args).unwrap_or_default(),
        );
        *nonce += 1;
        tx
    }

    /// One transaction in a block of its own; its receipt.
    pub fn call(
        &mut self,
        key: &SigningKey,
        contract: &str,
        method: &str,
        args: serde_json::Value,
    ) -> Result<Receipt, String> {
        let tx = self.tx(key, contract, method, &args);
        self.block(vec![tx])?
            .pop()
            .ok_or_else(|| "the block has no receipt".to_string())
    }

    /// A JSON state value of `contract`.
    pub fn get_json<T: DeserializeOwned>(&self, contract: &str, key: &str) -> Option<T> {
        self.state
            .get(&state_key(contract, key.as_bytes()))
            .and_then(|v| serde_json::from_slice(v).ok())
    }

    /// Keys of `contract` that start with `prefix`, in order.
    pub fn keys_with_prefix(&self, contract: &str, prefix: &str) -> Vec<String> {
        let start = state_key(contract, prefix.as_bytes());
        let ns = contract.len() + 1;
        self.state
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
            .filter_map(|(k, _)| String::from_utf8(k[ns..].to_vec()).ok())
            .collect()
    }
}
