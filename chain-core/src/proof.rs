//! Self-contained proof bundles and their one pure verification function.
//!
//! A bundle carries a block header, the commit certificate that decided it, the validator set
//! that signed it, and one claim (a transaction with its receipt is in the block, or a state key
//! has a value / is absent after the block). The verifier needs nothing else but the validator
//! set the caller trusts (genesis or current): it never talks to a node.

use serde::{Deserialize, Serialize};

use crate::crypto::{HashAlg, Suite};
use crate::merkle;
use crate::state::{StateProof, verify_state_proof};
use crate::types::{BlockHeader, CommitCertificate, Receipt, SignedTx, TxStatus, ValidatorSet};

pub const FORMAT: &str = "trellis-proof/1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProofBundle {
    pub format: String,
    pub chain_id: String,
    pub suite: Suite,
    /// Hex of the canonical `BlockHeader` bytes.
    pub header: String,
    /// Hex of the canonical `CommitCertificate` bytes.
    pub commit: String,
    /// Hex of the canonical `ValidatorSet` bytes.
    pub validator_set: String,
    pub claim: Claim,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Claim {
    TxInclusion {
        tx: String,
        index: u64,
        tx_count: u64,
        path: Vec<String>,
        receipt: String,
        receipt_path: Vec<String>,
    },
    State {
        contract: String,
        /// Hex of the contract's raw key.
        key: String,
        value: Option<String>,
        leaf: Option<crate::state::ProofLeaf>,
        siblings: Vec<String>,
    },
}

/// What a successfully verified bundle established.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verified {
    pub chain_id: String,
    pub height: u64,
    pub block_hash: String,
    pub time_ms: u64,
    pub signed_power: u64,
    pub total_power: u64,
    pub fact: Fact,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fact {
    TxIncluded {
        tx_id: String,
        contract: String,
        method: String,
        sender: String,
        status: TxStatus,
        code: String,
    },
    StateValue {
        contract: String,
        key: String,
        value: Option<String>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{code}: {message}")]
pub struct ProofError {
    pub code: &'static str,
    pub message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> ProofError {
    ProofError {
        code,
        message: message.into(),
    }
}

fn unhex(what: &str, s: &str) -> Result<Vec<u8>, ProofError> {
    hex::decode(s).map_err(|_| err("malformed", format!("{what} is not hex")))
}

fn hex32_list(what: &str, v: &[String]) -> Result<Vec<[u8; 32]>, ProofError> {
    v.iter()
        .map(|s| {
            unhex(what, s)?
                .try_into()
                .map_err(|_| err("malformed", format!("{what} entries are 32 bytes")))
        })
        .collect()
}

/// Verify `bundle` against the validator set the caller trusts.
pub fn verify_bundle(bundle: &ProofBundle, trusted: &ValidatorSet) -> Result<Verified, ProofError> {
    if bundle.format != FORMAT {
        return Err(err("unsupported_format", format!("expected {FORMAT}")));
    }
    let alg: HashAlg = bundle.suite.hash();
    let header_bytes = unhex("header", &bundle.header)?;
    let header = BlockHeader::decode(&header_bytes).map_err(|e| err("malformed", format!("header: {e}")))?;
    if header.chain_id != bundle.chain_id {
        return Err(err("wrong_chain", "header chain id differs from the bundle's"));
    }
    if header.prev_hash.alg != alg || header.state_root.alg != alg {
        return Err(err("wrong_suite", "header digests do not use the bundle's hash algorithm"));
    }
    let set_bytes = unhex("validator_set", &bundle.validator_set)?;
    let set = ValidatorSet::decode(&set_bytes).map_err(|e| err("malformed", format!("validator set: {e}")))?;
    if set.hash(alg) != trusted.hash(alg) {
        return Err(err(
            "untrusted_validator_set",
            "the block was signed by a validator set you do not trust",
        ));
    }
    let commit = CommitCertificate::decode(&unhex("commit", &bundle.commit)?)
        .map_err(|e| err("malformed", format!("commit: {e}")))?;
    commit
        .verify(&bundle.chain_id, &header, &set)
        .map_err(|e| err("bad_commit", e.to_string()))?;
    let signed_power = commit
        .signatures
        .iter()
        .filter_map(|s| set.validators().get(s.validator_index as usize))
        .map(|v| v.power)
        .sum();

    let fact = match &bundle.claim {
        Claim::TxInclusion {
            tx,
            index,
            tx_count,
            path,
            receipt,
            receipt_path,
        } => {
            let tx_bytes = unhex("tx", tx)?;
            let stx = SignedTx::decode(&tx_bytes, alg).map_err(|e| err("malformed", format!("tx: {e}")))?;
            if stx.body.chain_id != header.chain_id {
                return Err(err("wrong_chain", "transaction is for another chain"));
            }
            stx.verify_signature()
                .map_err(|e| err("bad_signature", format!("transaction signature: {e}")))?;
            let tx_id = stx.id();
            let path = hex32_list("path", path)?;
            if !merkle::verify_inclusion(alg, &tx_id.bytes, *index, *tx_count, &path, &header.tx_root.bytes) {
                return Err(err("bad_proof", "transaction is not in the block's tx_root"));
            }
            let receipt_bytes = unhex("receipt", receipt)?;
            let rc = Receipt::decode(&receipt_bytes).map_err(|e| err("malformed", format!("receipt: {e}")))?;
            if rc.tx_id != tx_id {
                return Err(err("bad_proof", "receipt belongs to another transaction"));
            }
            let rpath = hex32_list("receipt_path", receipt_path)?;
            if !merkle::verify_inclusion(alg, &receipt_bytes, *index, *tx_count, &rpath, &header.receipt_root.bytes) {
                return Err(err("bad_proof", "receipt is not in the block's receipt_root"));
            }
            Fact::TxIncluded {
                tx_id: tx_id.to_hex(),
                contract: stx.body.contract.clone(),
                method: stx.body.method.clone(),
                sender: stx.body.sender.to_text(),
                status: rc.status,
                code: rc.code,
            }
        }
        Claim::State {
            contract,
            key,
            value,
            leaf,
            siblings,
        } => {
            let raw_key = unhex("key", key)?;
            let value_bytes = value.as_deref().map(|v| unhex("value", v)).transpose()?;
            let full = crate::contract::state_key(contract, &raw_key);
            let proof = StateProof {
                leaf: leaf.clone(),
                siblings: siblings.clone(),
            };
            verify_state_proof(alg, &header.state_root.bytes, &full, value_bytes.as_deref(), &proof)
                .map_err(|m| err("bad_proof", m))?;
            Fact::StateValue {
                contract: contract.clone(),
                key: key.clone(),
                value: value.clone(),
            }
        }
    };
    Ok(Verified {
        chain_id: header.chain_id.clone(),
        height: header.height,
        block_hash: header.hash().to_hex(),
        time_ms: header.time_ms,
        signed_power,
        total_power: set.total_power(),
        fact,
    })
}
