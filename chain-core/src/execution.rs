//! Block execution: applies an ordered list of transactions to the parent state and returns
//! the write set, receipts and roots. Pure with respect to its inputs (state reads go through
//! `StateRead`), so every node executing the same block gets the same result.

use crate::contract::{
    BlockInfo, CallContext, ContractError, ContractRegistry, StateRead, WriteSet, state_key,
};
use crate::crypto::Digest;
use crate::system::{self, PendingValidators};
use crate::types::{Receipt, SignedTx, TxStatus, Validator};

/// How to treat a transaction that can't be in this block at all (wrong nonce, expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Building a proposal: leave such transactions out.
    Propose,
    /// Checking someone else's block: such a transaction makes the block invalid.
    Verify,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("transaction {index} is not valid in this block: {reason}")]
    InvalidTx { index: usize, reason: String },
    #[error("state read failed: {0}")]
    Storage(String),
}

pub struct Executed {
    pub txs: Vec<SignedTx>,
    pub receipts: Vec<Receipt>,
    pub writes: WriteSet,
    /// Transactions left out of a proposal, with the reason.
    pub dropped: Vec<(SignedTx, String)>,
}

pub fn nonce_key(sender: &crate::crypto::PublicKey) -> Vec<u8> {
    state_key(system::NAME, format!("nonce/{sender}").as_bytes())
}

fn read(base: &dyn StateRead, writes: &WriteSet, key: &[u8]) -> Result<Option<Vec<u8>>, ExecError> {
    if let Some(v) = writes.get(key) {
        return Ok(v.clone());
    }
    base.get(key).map_err(ExecError::Storage)
}

fn read_json<T: serde::de::DeserializeOwned>(
    base: &dyn StateRead,
    writes: &WriteSet,
    key: &[u8],
) -> Result<Option<T>, ExecError> {
    match read(base, writes, key)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| ExecError::Storage(format!("corrupt state value: {e}"))),
    }
}

/// The validator set that signs block `height`, given the state after block `height - 1`.
pub fn validators_for_height(
    base: &dyn StateRead,
    writes: &WriteSet,
    height: u64,
) -> Result<Vec<Validator>, ExecError> {
    if let Some(p) = read_json::<PendingValidators>(
        base,
        writes,
        &state_key(system::NAME, b"validators_pending"),
    )? && p.effective_height <= height
    {
        return Ok(p.validators);
    }
    Ok(read_json(base, writes, &state_key(system::NAME, b"validators"))?.unwrap_or_default())
}

/// Executes `txs` on top of `base`.
pub fn execute_block(
    block: &BlockInfo,
    base: &dyn StateRead,
    registry: &ContractRegistry,
    txs: Vec<SignedTx>,
    mode: Mode,
) -> Result<Executed, ExecError> {
    let mut writes = WriteSet::new();
    // Begin block: a scheduled validator-set change becomes current at its height.
    let pending_key = state_key(system::NAME, b"validators_pending");
    if let Some(p) = read_json::<PendingValidators>(base, &writes, &pending_key)?
        && p.effective_height <= block.height
    {
        let bytes =
            serde_json::to_vec(&p.validators).map_err(|e| ExecError::Storage(e.to_string()))?;
        writes.insert(state_key(system::NAME, b"validators"), Some(bytes));
        writes.insert(pending_key, None);
    }

    let mut included = Vec::with_capacity(txs.len());
    let mut receipts = Vec::with_capacity(txs.len());
    let mut dropped = Vec::new();
    for (index, tx) in txs.into_iter().enumerate() {
        let nk = nonce_key(&tx.body.sender);
        let expected: u64 = read_json(base, &writes, &nk)?.unwrap_or(0);
        let precheck = if tx.body.chain_id != block.chain_id {
            Some("wrong chain id".to_string())
        } else if tx.body.expiry_ms < block.time_ms {
            Some("expired".to_string())
        } else if tx.body.nonce != expected {
            Some(format!(
                "nonce {} but account expects {expected}",
                tx.body.nonce
            ))
        } else {
            None
        };
        if let Some(reason) = precheck {
            match mode {
                // Ahead of the account (an earlier nonce is still missing): not invalid, just
                // not yet — leave it out of this block but keep it in the pool.
                Mode::Propose if tx.body.nonce > expected && tx.body.expiry_ms >= block.time_ms => {
                    continue;
                }
                Mode::Propose => {
                    dropped.push((tx, reason));
                    continue;
                }
                Mode::Verify => return Err(ExecError::InvalidTx { index, reason }),
            }
        }
        writes.insert(nk, Some((expected + 1).to_string().into_bytes()));
        let receipt = run_tx(block, base, registry, &mut writes, &tx)?;
        receipts.push(receipt);
        included.push(tx);
    }
    Ok(Executed {
        txs: included,
        receipts,
        writes,
        dropped,
    })
}

fn run_tx(
    block: &BlockInfo,
    base: &dyn StateRead,
    registry: &ContractRegistry,
    writes: &mut WriteSet,
    tx: &SignedTx,
) -> Result<Receipt, ExecError> {
    let tx_id: Digest = tx.id();
    let failed = |code: &str, message: String| Receipt {
        tx_id,
        status: TxStatus::Failed,
        code: code.to_string(),
        message,
        events: vec![],
    };
    let version: Option<u32> = read_json(
        base,
        writes,
        &state_key(
            system::NAME,
            format!("contract_version/{}", tx.body.contract).as_bytes(),
        ),
    )?;
    let Some(contract) = version.and_then(|v| registry.get(&tx.body.contract, v)) else {
        return Ok(failed(
            "unknown_contract",
            format!("no active contract `{}`", tx.body.contract),
        ));
    };
    if !contract.methods().contains(&tx.body.method.as_str()) {
        return Ok(failed(
            "unknown_method",
            format!(
                "contract `{}` has no method `{}`",
                tx.body.contract, tx.body.method
            ),
        ));
    }
    let name = contract.name();
    let mut ctx = CallContext::new(
        block,
        tx_id,
        tx.body.sender.clone(),
        name,
        base,
        writes,
        registry,
    );
    // Only members with an active key may act on the chain at all.
    let outcome = system::sender_member(&ctx)
        .and_then(|_| contract.call(&mut ctx, &tx.body.method, &tx.body.args));
    match outcome {
        Ok(()) => {
            let (tx_writes, events) = ctx.into_parts();
            writes.extend(tx_writes);
            Ok(Receipt {
                tx_id,
                status: TxStatus::Ok,
                code: String::new(),
                message: String::new(),
                events,
            })
        }
        Err(ContractError::Rejected { code, message }) => Ok(failed(&code, message)),
        Err(ContractError::Fatal(e)) => Err(ExecError::Storage(e)),
    }
}
