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
    let header =
        BlockHeader::decode(&header_bytes).map_err(|e| err("malformed", format!("header: {e}")))?;
    if header.chain_id != bundle.chain_id {
        return Err(err(
            "wrong_chain",
            "header chain id differs from the bundle's",
        ));
    }
    if header.prev_hash.alg != alg || header.state_root.alg != alg {
        return Err(err(
            "wrong_suite",
            "header digests do not use the bundle's hash algorithm",
        ));
    }
    let set_bytes = unhex("validator_set", &bundle.validator_set)?;
    let set = ValidatorSet::decode(&set_bytes)
        .map_err(|e| err("malformed", format!("validator set: {e}")))?;
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
            let stx = SignedTx::decode(&tx_bytes, alg)
                .map_err(|e| err("malformed", format!("tx: {e}")))?;
            if stx.body.chain_id != header.chain_id {
                return Err(err("wrong_chain", "transaction is for another chain"));
            }
            stx.verify_signature()
                .map_err(|e| err("bad_signature", format!("transaction signature: {e}")))?;
            let tx_id = stx.id();
            if *tx_count != header.tx_count as u64 {
                return Err(err("bad_proof", "tx_count differs from the block header's"));
            }
            let path = hex32_list("path", path)?;
            if !merkle::verify_inclusion(
                alg,
                &tx_id.bytes,
                *index,
                *tx_count,
                &path,
                &header.tx_root.bytes,
            ) {
                return Err(err(
                    "bad_proof",
                    "transaction is not in the block's tx_root",
                ));
            }
            let receipt_bytes = unhex("receipt", receipt)?;
            let rc = Receipt::decode(&receipt_bytes)
                .map_err(|e| err("malformed", format!("receipt: {e}")))?;
            if rc.tx_id != tx_id {
                return Err(err("bad_proof", "receipt belongs to another transaction"));
            }
            let rpath = hex32_list("receipt_path", receipt_path)?;
            if !merkle::verify_inclusion(
                alg,
                &receipt_bytes,
                *index,
                *tx_count,
                &rpath,
                &header.receipt_root.bytes,
            ) {
                return Err(err(
                    "bad_proof",
                    "receipt is not in the block's receipt_root",
                ));
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
            if contract.is_empty()
                || contract.len() > crate::types::MAX_NAME_LEN
                || !contract
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(err("malformed", "invalid contract name"));
            }
            let raw_key = unhex("key", key)?;
            let value_bytes = value.as_deref().map(|v| unhex("value", v)).transpose()?;
            let full = crate::contract::state_key(contract, &raw_key);
            let proof = StateProof {
                leaf: leaf.clone(),
                siblings: siblings.clone(),
            };
            verify_state_proof(
                alg,
                &header.state_root.bytes,
                &full,
                value_bytes.as_deref(),
                &proof,
            )
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

/// Bundles assembled by hand from real signatures and Merkle paths, verified and tampered with.
#[cfg(test)]
mod bundle_tests {
    use super::*;
    use crate::contract::state_key;
    use crate::crypto::{Digest, SigningKey};
    use crate::state::{INTERNAL_DOMAIN, LEAF_DOMAIN, PLACEHOLDER, ProofLeaf};
    use crate::types::{CommitSig, Event, Validator, build_tx};

    const CHAIN: &str = "bundle-test";

    struct Fixture {
        suite: Suite,
        keys: Vec<SigningKey>,
        set: ValidatorSet,
        txs: Vec<SignedTx>,
        receipts: Vec<Receipt>,
        header: BlockHeader,
        /// The single state entry of the block's state tree.
        state: (Vec<u8>, Vec<u8>),
    }

    fn fixture(suite: Suite, n_validators: usize, n_txs: usize) -> Fixture {
        let alg = suite.hash();
        let keys: Vec<SigningKey> = (0..n_validators)
            .map(|i| SigningKey::from_label(suite.sig(), &format!("val-{i}")))
            .collect();
        let set = ValidatorSet::new(
            keys.iter()
                .map(|k| Validator {
                    public_key: k.public_key(),
                    power: 10,
                })
                .collect(),
        )
        .unwrap();
        let sender = SigningKey::from_label(suite.sig(), "sender");
        let txs: Vec<SignedTx> = (0..n_txs)
            .map(|i| {
                build_tx(
                    suite,
                    CHAIN,
                    &sender,
                    i as u64,
                    u64::MAX,
                    "notary",
                    "anchor",
                    format!("{{\"i\":{i}}}").into_bytes(),
                )
            })
            .collect();
        let receipts: Vec<Receipt> = txs
            .iter()
            .enumerate()
            .map(|(i, t)| Receipt {
                tx_id: t.id(),
                status: if i % 2 == 0 {
                    TxStatus::Ok
                } else {
                    TxStatus::Failed
                },
                code: if i % 2 == 0 {
                    String::new()
                } else {
                    "invalid_args".into()
                },
                message: String::new(),
                events: vec![Event {
                    contract: "notary".into(),
                    kind: "anchored".into(),
                    data: b"{}".to_vec(),
                }],
            })
            .collect();
        let ids: Vec<[u8; 32]> = txs.iter().map(|t| t.id().bytes).collect();
        let rbytes: Vec<Vec<u8>> = receipts.iter().map(|r| r.encode()).collect();
        // A state tree holding exactly one entry: its root is the leaf's hash.
        let state = (state_key("notary", b"doc/x"), b"{\"hash\":\"00\"}".to_vec());
        let kh = alg.digest(&state.0).bytes;
        let vh = alg.digest(&state.1).bytes;
        let state_root = alg.digest_parts(&[LEAF_DOMAIN, &kh, &vh]);
        let header = BlockHeader {
            chain_id: CHAIN.into(),
            height: 7,
            time_ms: 1_700_000_000_000,
            tx_count: ids.len() as u32,
            prev_hash: alg.digest(b"parent"),
            tx_root: merkle::root(alg, &ids),
            receipt_root: merkle::root(alg, &rbytes),
            state_root,
            validator_set_hash: set.hash(alg),
            proposer: set.validators()[0].public_key.clone(),
        };
        Fixture {
            suite,
            keys,
            set,
            txs,
            receipts,
            header,
            state,
        }
    }

    impl Fixture {
        /// Certificate signed by the validators at `signers` (indices into the sorted set).
        fn cert(&self, signers: &[usize]) -> CommitCertificate {
            let hash = self.header.hash();
            let msg = CommitCertificate::precommit_message(CHAIN, self.header.height, 0, &hash);
            CommitCertificate {
                height: self.header.height,
                round: 0,
                block_hash: hash,
                signatures: signers
                    .iter()
                    .map(|&i| {
                        let pk = &self.set.validators()[i].public_key;
                        let k = self.keys.iter().find(|k| &k.public_key() == pk).unwrap();
                        CommitSig {
                            validator_index: i as u32,
                            signature: k.sign(&msg),
                        }
                    })
                    .collect(),
            }
        }

        fn bundle(&self, cert: &CommitCertificate, claim: Claim) -> ProofBundle {
            ProofBundle {
                format: FORMAT.into(),
                chain_id: CHAIN.into(),
                suite: self.suite,
                header: hex::encode(self.header.encode()),
                commit: hex::encode(cert.encode()),
                validator_set: hex::encode(self.set.encode()),
                claim,
            }
        }

        fn tx_claim(&self, index: usize) -> Claim {
            let alg = self.suite.hash();
            let ids: Vec<[u8; 32]> = self.txs.iter().map(|t| t.id().bytes).collect();
            let rbytes: Vec<Vec<u8>> = self.receipts.iter().map(|r| r.encode()).collect();
            Claim::TxInclusion {
                tx: hex::encode(self.txs[index].bytes()),
                index: index as u64,
                tx_count: self.txs.len() as u64,
                path: merkle::inclusion_path(alg, &ids, index)
                    .unwrap()
                    .iter()
                    .map(hex::encode)
                    .collect(),
                receipt: hex::encode(&rbytes[index]),
                receipt_path: merkle::inclusion_path(alg, &rbytes, index)
                    .unwrap()
                    .iter()
                    .map(hex::encode)
                    .collect(),
            }
        }

        fn state_claim(&self, key: &[u8], value: Option<&[u8]>) -> Claim {
            let alg = self.suite.hash();
            Claim::State {
                contract: "notary".into(),
                key: hex::encode(key),
                value: value.map(hex::encode),
                leaf: Some(ProofLeaf {
                    key_hash: hex::encode(alg.digest(&self.state.0).bytes),
                    value_hash: hex::encode(alg.digest(&self.state.1).bytes),
                }),
                siblings: vec![],
            }
        }
    }

    fn code(r: Result<Verified, ProofError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(e) => e.code,
        }
    }

    #[test]
    fn tx_inclusion_bundles_verify_for_every_index_in_both_suites() {
        for suite in [Suite::Ed25519Sha256, Suite::Sm2Sm3] {
            let f = fixture(suite, 4, 7);
            // 3 of 4 equal-power validators: 30 of 40 > 2/3.
            let cert = f.cert(&[0, 2, 3]);
            for i in 0..f.txs.len() {
                let v = verify_bundle(&f.bundle(&cert, f.tx_claim(i)), &f.set).unwrap();
                assert_eq!(v.height, 7);
                assert_eq!(v.signed_power, 30);
                assert_eq!(v.total_power, 40);
                assert_eq!(v.block_hash, f.header.hash().to_hex());
                match v.fact {
                    Fact::TxIncluded {
                        tx_id,
                        status,
                        code,
                        ..
                    } => {
                        assert_eq!(tx_id, f.txs[i].id().to_hex());
                        assert_eq!(status, f.receipts[i].status);
                        assert_eq!(code, f.receipts[i].code);
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn commit_certificate_rules() {
        let f = fixture(Suite::Ed25519Sha256, 4, 3);
        let claim = f.tx_claim(1);
        // Exactly 2/3 is not enough; fewer neither.
        assert_eq!(
            code(verify_bundle(
                &f.bundle(&f.cert(&[0, 1]), claim.clone()),
                &f.set
            )),
            "bad_commit"
        );
        assert_eq!(
            code(verify_bundle(
                &f.bundle(&f.cert(&[]), claim.clone()),
                &f.set
            )),
            "bad_commit"
        );
        // A signer counted twice does not add power.
        let mut dup = f.cert(&[0, 1]);
        dup.signatures.push(dup.signatures[0].clone());
        assert_eq!(
            code(verify_bundle(&f.bundle(&dup, claim.clone()), &f.set)),
            "bad_commit"
        );
        // Unknown index.
        let mut unknown = f.cert(&[0, 1, 2]);
        unknown.signatures[2].validator_index = 9;
        assert_eq!(
            code(verify_bundle(&f.bundle(&unknown, claim.clone()), &f.set)),
            "bad_commit"
        );
        // A signature attributed to another validator.
        let mut swapped = f.cert(&[0, 1, 2]);
        swapped.signatures[2].validator_index = 3;
        assert_eq!(
            code(verify_bundle(&f.bundle(&swapped, claim.clone()), &f.set)),
            "bad_commit"
        );
        // A signature for another round.
        let mut round = f.cert(&[0, 1, 2]);
        round.round = 1;
        assert_eq!(
            code(verify_bundle(&f.bundle(&round, claim.clone()), &f.set)),
            "bad_commit"
        );
        // A certificate for another height.
        let mut height = f.cert(&[0, 1, 2]);
        height.height += 1;
        assert_eq!(
            code(verify_bundle(&f.bundle(&height, claim.clone()), &f.set)),
            "bad_commit"
        );
        assert_eq!(
            code(verify_bundle(&f.bundle(&f.cert(&[0, 1, 2]), claim), &f.set)),
            "ok"
        );
    }

    #[test]
    fn validator_set_must_be_the_trusted_one() {
        let f = fixture(Suite::Sm2Sm3, 1, 2);
        let other = fixture(Suite::Sm2Sm3, 2, 2);
        let b = f.bundle(&f.cert(&[0]), f.tx_claim(0));
        assert_eq!(code(verify_bundle(&b, &f.set)), "ok");
        assert_eq!(
            code(verify_bundle(&b, &other.set)),
            "untrusted_validator_set"
        );
        // Swapping in the trusted set does not help: the header commits to its signers' set.
        let mut b2 = b.clone();
        b2.validator_set = hex::encode(other.set.encode());
        assert_eq!(code(verify_bundle(&b2, &other.set)), "bad_commit");
    }

    #[test]
    fn tampering_with_any_field_fails() {
        for suite in [Suite::Ed25519Sha256, Suite::Sm2Sm3] {
            let f = fixture(suite, 1, 5);
            let good = f.bundle(&f.cert(&[0]), f.tx_claim(2));
            assert_eq!(code(verify_bundle(&good, &f.set)), "ok");
            let mut cases: Vec<(&str, ProofBundle)> = Vec::new();
            let flip = |s: &str, at: usize| {
                let mut b = hex::decode(s).unwrap();
                let i = at % b.len();
                b[i] ^= 1;
                hex::encode(b)
            };
            let mut b = good.clone();
            b.format = "trellis-proof/2".into();
            cases.push(("format", b));
            let mut b = good.clone();
            b.chain_id = "other".into();
            cases.push(("chain_id", b));
            let mut b = good.clone();
            b.suite = match suite {
                Suite::Ed25519Sha256 => Suite::Sm2Sm3,
                Suite::Sm2Sm3 => Suite::Ed25519Sha256,
            };
            cases.push(("suite", b));
            for at in [5, 40, 100, 150] {
                let mut b = good.clone();
                b.header = flip(&b.header, at);
                cases.push(("header", b));
                let mut b = good.clone();
                b.commit = flip(&b.commit, at);
                cases.push(("commit", b));
            }
            let Claim::TxInclusion {
                tx,
                index,
                tx_count,
                path,
                receipt,
                receipt_path,
            } = good.claim.clone()
            else {
                unreachable!()
            };
            let with = |c: Claim| ProofBundle {
                claim: c,
                ..good.clone()
            };
            for at in [10, 60, 120] {
                cases.push((
                    "tx",
                    with(Claim::TxInclusion {
                        tx: flip(&tx, at),
                        index,
                        tx_count,
                        path: path.clone(),
                        receipt: receipt.clone(),
                        receipt_path: receipt_path.clone(),
                    }),
                ));
                cases.push((
                    "receipt",
                    with(Claim::TxInclusion {
                        tx: tx.clone(),
                        index,
                        tx_count,
                        path: path.clone(),
                        receipt: flip(&receipt, at),
                        receipt_path: receipt_path.clone(),
                    }),
                ));
            }
            cases.push((
                "index",
                with(Claim::TxInclusion {
                    tx: tx.clone(),
                    index: index + 1,
                    tx_count,
                    path: path.clone(),
                    receipt: receipt.clone(),
                    receipt_path: receipt_path.clone(),
                }),
            ));
            // (The header does not commit to the transaction count, so a count that gives the
            // same tree shape on the leaf's path is not detected; an impossible one is.)
            for bad_count in [0, index, tx_count - 1] {
                cases.push((
                    "tx_count",
                    with(Claim::TxInclusion {
                        tx: tx.clone(),
                        index,
                        tx_count: bad_count,
                        path: path.clone(),
                        receipt: receipt.clone(),
                        receipt_path: receipt_path.clone(),
                    }),
                ));
            }
            for i in 0..path.len() {
                let mut p = path.clone();
                p[i] = flip(&p[i], 3);
                cases.push((
                    "path",
                    with(Claim::TxInclusion {
                        tx: tx.clone(),
                        index,
                        tx_count,
                        path: p,
                        receipt: receipt.clone(),
                        receipt_path: receipt_path.clone(),
                    }),
                ));
                let mut rp = receipt_path.clone();
                rp[i] = flip(&rp[i], 3);
                cases.push((
                    "receipt_path",
                    with(Claim::TxInclusion {
                        tx: tx.clone(),
                        index,
                        tx_count,
                        path: path.clone(),
                        receipt: receipt.clone(),
                        receipt_path: rp,
                    }),
                ));
            }
            // Another transaction's receipt, with its own valid path.
            let Claim::TxInclusion {
                receipt: r3,
                receipt_path: rp3,
                ..
            } = f.tx_claim(3)
            else {
                unreachable!()
            };
            cases.push((
                "other receipt",
                with(Claim::TxInclusion {
                    tx: tx.clone(),
                    index,
                    tx_count,
                    path: path.clone(),
                    receipt: r3,
                    receipt_path: rp3,
                }),
            ));
            cases.push((
                "not hex",
                with(Claim::TxInclusion {
                    tx: "zz".into(),
                    index,
                    tx_count,
                    path,
                    receipt,
                    receipt_path,
                }),
            ));
            for (what, b) in cases {
                assert!(
                    verify_bundle(&b, &f.set).is_err(),
                    "{suite}: tampered {what} accepted"
                );
            }
        }
    }

    #[test]
    fn state_claims_prove_values_and_absence() {
        for suite in [Suite::Ed25519Sha256, Suite::Sm2Sm3] {
            let f = fixture(suite, 1, 1);
            let cert = f.cert(&[0]);
            let value = f.state.1.clone();
            let ok = verify_bundle(
                &f.bundle(&cert, f.state_claim(b"doc/x", Some(&value))),
                &f.set,
            )
            .unwrap();
            assert_eq!(
                ok.fact,
                Fact::StateValue {
                    contract: "notary".into(),
                    key: hex::encode(b"doc/x"),
                    value: Some(hex::encode(&value)),
                }
            );
            // Absence of another key, proven by the only leaf of the tree.
            assert_eq!(
                code(verify_bundle(
                    &f.bundle(&cert, f.state_claim(b"doc/y", None)),
                    &f.set
                )),
                "ok"
            );
            // The existing key cannot be claimed absent, nor carry another value.
            assert_eq!(
                code(verify_bundle(
                    &f.bundle(&cert, f.state_claim(b"doc/x", None)),
                    &f.set
                )),
                "bad_proof"
            );
            assert_eq!(
                code(verify_bundle(
                    &f.bundle(&cert, f.state_claim(b"doc/x", Some(b"{}"))),
                    &f.set
                )),
                "bad_proof"
            );
            assert_eq!(
                code(verify_bundle(
                    &f.bundle(&cert, f.state_claim(b"doc/y", Some(&value))),
                    &f.set
                )),
                "bad_proof"
            );
            // The same key under another contract is another key.
            let mut other = f.state_claim(b"doc/x", Some(&value));
            if let Claim::State { contract, .. } = &mut other {
                *contract = "system".into();
            }
            assert_eq!(
                code(verify_bundle(&f.bundle(&cert, other), &f.set)),
                "bad_proof"
            );
            // Padding the proof with siblings changes the root.
            let mut padded = f.state_claim(b"doc/x", Some(&value));
            if let Claim::State { siblings, .. } = &mut padded {
                siblings.push(hex::encode(PLACEHOLDER));
            }
            assert_eq!(
                code(verify_bundle(&f.bundle(&cert, padded), &f.set)),
                "bad_proof"
            );
            // An empty-subtree claim (no leaf) for a non-empty root fails.
            let mut empty = f.state_claim(b"doc/y", None);
            if let Claim::State { leaf, .. } = &mut empty {
                *leaf = None;
            }
            assert_eq!(
                code(verify_bundle(&f.bundle(&cert, empty), &f.set)),
                "bad_proof"
            );
            let _ = (INTERNAL_DOMAIN, Digest::zero(suite.hash()));
        }
    }
}
