//! The `notary` contract: anchors a document digest under a caller-chosen key, once.
//! Apps use it for hash-anchored documents (tender files, certificates); it is also the
//! workload of `trellis bench`, since every call writes state.

use serde::{Deserialize, Serialize};

use crate::contract::{CallContext, Contract, ContractError, parse_args};
use crate::system;

pub const NAME: &str = "notary";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Anchor {
    key: String,
    /// Hex digest of the document (32 to 64 bytes).
    hash: String,
    #[serde(default)]
    note: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Anchored {
    pub hash: String,
    pub note: String,
    pub by: String,
    pub height: u64,
    pub time_ms: u64,
}

pub struct NotaryContract;

impl Contract for NotaryContract {
    fn name(&self) -> &'static str {
        NAME
    }
    fn methods(&self) -> &'static [&'static str] {
        &["anchor"]
    }
    fn call(
        &self,
        ctx: &mut CallContext<'_>,
        method: &str,
        args: &[u8],
    ) -> Result<(), ContractError> {
        if method != "anchor" {
            return Err(ContractError::new(
                "unknown_method",
                format!("notary has no method {method}"),
            ));
        }
        let a: Anchor = parse_args(args)?;
        if a.key.is_empty() || a.key.len() > 200 {
            return Err(ContractError::invalid_args("key must be 1-200 bytes"));
        }
        let raw =
            hex::decode(&a.hash).map_err(|_| ContractError::invalid_args("hash must be hex"))?;
        if !(32..=64).contains(&raw.len()) {
            return Err(ContractError::invalid_args("hash must be 32 to 64 bytes"));
        }
        if a.note.len() > 1000 {
            return Err(ContractError::invalid_args("note is limited to 1000 bytes"));
        }
        let who = system::sender_member(ctx)?;
        let state_key = format!("doc/{}", a.key);
        if let Some(existing) = ctx.get_json::<Anchored>(&state_key)? {
            return Err(ContractError::new(
                "already_anchored",
                format!("key {} was anchored at height {}", a.key, existing.height),
            ));
        }
        let rec = Anchored {
            hash: a.hash.to_lowercase(),
            note: a.note,
            by: who.id(),
            height: ctx.block.height,
            time_ms: ctx.block.time_ms,
        };
        ctx.set_json(&state_key, &rec)?;
        ctx.emit(
            "anchored",
            &serde_json::json!({"key": a.key, "hash": rec.hash, "by": rec.by}),
        )
    }
}
