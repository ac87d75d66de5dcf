//! Trellis chain core: the shared permissioned ledger every app builds on.
//!
//! Data model and canonical encoding (`types`, `codec`), crypto suites (`crypto`), native
//! contracts (`contract`, `system`, `notary`), execution, the authenticated state tree
//! (`state`), storage (`storage`), the mempool, the node and its consensus boundary, proof
//! bundles (`proof`) and the JSON API (`api`). It knows nothing about apps or web pages.

pub mod api;
pub mod bft;
pub mod codec;
pub mod consensus;
pub mod contract;
pub mod crypto;
pub mod execution;
pub mod genesis;
pub mod keystore;
pub mod ledger;
pub mod mempool;
pub mod merkle;
pub mod metrics;
pub mod node;
pub mod notary;
pub mod proof;
pub mod relay;
pub mod state;
pub mod storage;
pub mod system;
pub mod types;

#[cfg(test)]
mod spec_vectors;

/// The contracts every chain carries.
pub fn core_contracts() -> contract::ContractRegistry {
    let mut r = contract::ContractRegistry::new();
    r.register(std::sync::Arc::new(system::SystemContract));
    r.register(std::sync::Arc::new(notary::NotaryContract));
    r
}
