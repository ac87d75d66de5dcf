//! Batches of accepted messages and the proofs of their readings: a batch's root is the RFC 9162
//! Merkle tree hash over its envelopes exactly as received (docs/spec/iot.md §6); a reading's
//! proof leads from its envelope to that root, and the anchoring transaction's own proof leads
//! from the root to a block signed by the validators.

use chain_core::crypto::{Digest, HashAlg};
use chain_core::merkle;
use serde::{Deserialize, Serialize};

/// A closed batch, ready to anchor.
#[derive(Debug, Clone)]
pub struct Batch {
    pub id: String,
    pub envelopes: Vec<Vec<u8>>,
    pub first_ms: i64,
    pub last_ms: i64,
}

impl Batch {
    pub fn root(&self, alg: HashAlg) -> Digest {
        merkle::root(alg, &self.envelopes)
    }

    /// The `iot.anchor_batch` arguments of this batch.
    pub fn anchor_args(&self, alg: HashAlg) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "root": self.root(alg).to_hex(),
            "count": self.envelopes.len(),
            "first_ms": self.first_ms.max(0),
            "last_ms": self.last_ms.max(self.first_ms).max(0),
        })
    }

    /// The proof that the `index`th envelope is in this batch.
    pub fn proof(&self, alg: HashAlg, index: usize) -> Option<ReadingProof> {
        let path = merkle::inclusion_path(alg, &self.envelopes, index)?;
        Some(ReadingProof {
            batch: self.id.clone(),
            envelope: String::from_utf8_lossy(&self.envelopes[index]).into_owned(),
            index: index as u64,
            size: self.envelopes.len() as u64,
            path: path.iter().map(hex::encode).collect(),
            root: self.root(alg).to_hex(),
        })
    }
}

/// Reading → batch root. Together with the anchoring transaction's proof bundle (root → tx →
/// block), a reading is proven without trusting the gateway's database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadingProof {
    pub batch: String,
    /// The envelope as the device sent it.
    pub envelope: String,
    pub index: u64,
    pub size: u64,
    /// Sibling hashes from the leaf up (hex).
    pub path: Vec<String>,
    /// The batch root (hex), as anchored in `iot.anchor_batch`.
    pub root: String,
}

impl ReadingProof {
    /// Checks the path against `anchored_root` (hex, from the chain's `batch/{id}` record).
    pub fn verify(&self, alg: HashAlg, anchored_root: &str) -> bool {
        let Ok(root) = hex::decode(anchored_root) else {
            return false;
        };
        let Ok(root) = <[u8; 32]>::try_from(root.as_slice()) else {
            return false;
        };
        let mut path = Vec::with_capacity(self.path.len());
        for p in &self.path {
            let Some(h) = hex::decode(p)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            else {
                return false;
            };
            path.push(h);
        }
        self.root.eq_ignore_ascii_case(anchored_root)
            && merkle::verify_inclusion(
                alg,
                self.envelope.as_bytes(),
                self.index,
                self.size,
                &path,
                &root,
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Batch {
        Batch {
            id: "gw-1".into(),
            envelopes: (0..n)
                .map(|i| format!(r#"{{"payload":"{{\"seq\":{i}}}","sig":"00"}}"#).into_bytes())
                .collect(),
            first_ms: 10,
            last_ms: 20,
        }
    }

    #[test]
    fn every_reading_proves_against_the_anchored_root_and_a_tampered_one_does_not() {
        for n in [1, 2, 3, 7, 64, 100] {
            let b = batch(n);
            let root = b.root(HashAlg::Sha256).to_hex();
            for i in 0..n {
                let p = b.proof(HashAlg::Sha256, i).expect("proof");
                assert!(p.verify(HashAlg::Sha256, &root), "n={n} i={i}");
                let mut tampered = p.clone();
                tampered.envelope = tampered.envelope.replace("seq", "seg");
                assert!(!tampered.verify(HashAlg::Sha256, &root));
                let mut moved = p.clone();
                moved.index = (moved.index + 1) % n as u64;
                assert!(n == 1 || !moved.verify(HashAlg::Sha256, &root));
            }
            assert!(b.proof(HashAlg::Sha256, n).is_none());
        }
        let b = batch(5);
        let other = batch(6).root(HashAlg::Sha256).to_hex();
        let p = b.proof(HashAlg::Sha256, 0).expect("proof");
        assert!(
            !p.verify(HashAlg::Sha256, &other),
            "a proof is bound to its batch's root"
        );
        assert!(!p.verify(HashAlg::Sha256, "not hex"));
    }

    #[test]
    fn anchor_arguments_name_the_root_and_the_count() {
        let b = batch(3);
        let a = b.anchor_args(HashAlg::Sha256);
        assert_eq!(a["count"], 3);
        assert_eq!(a["root"], b.root(HashAlg::Sha256).to_hex());
    }
}
