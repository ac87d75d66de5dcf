//! Chain data model: transactions, blocks, validator sets, commit certificates, receipts.
//! Byte layouts are normative and specified in docs/spec/encoding.md.

use std::sync::Arc;

use serde::Serialize;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Digest, HashAlg, PublicKey, Signature, SigningKey, Suite};

pub const TX_DOMAIN: &[u8] = b"trellis/tx/v1\0";
pub const PRECOMMIT_DOMAIN: &[u8] = b"trellis/precommit/v1\0";
pub const ENCODING_VERSION: u8 = 1;

/// Limits that keep decoding cheap for hostile input. Admission applies tighter configured ones.
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_CHAIN_ID_LEN: usize = 64;
pub const MAX_ARGS_LEN: usize = 1024 * 1024;

/// The unsigned part of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxBody {
    pub chain_id: String,
    pub sender: PublicKey,
    pub nonce: u64,
    pub expiry_ms: u64,
    pub contract: String,
    pub method: String,
    pub args: Vec<u8>,
}

impl TxBody {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(128 + self.args.len());
        w.u8(ENCODING_VERSION)
            .str(&self.chain_id)
            .public_key(&self.sender)
            .u64(self.nonce)
            .u64(self.expiry_ms)
            .str(&self.contract)
            .str(&self.method)
            .bytes(&self.args);
        w.finish()
    }

    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(data);
        let v = r.u8("version")?;
        if v != ENCODING_VERSION {
            return Err(DecodeError::Version(v));
        }
        let body = Self {
            chain_id: r.str_limited("chain_id", MAX_CHAIN_ID_LEN)?.to_string(),
            sender: r.public_key("sender")?,
            nonce: r.u64("nonce")?,
            expiry_ms: r.u64("expiry_ms")?,
            contract: r.str_limited("contract", MAX_NAME_LEN)?.to_string(),
            method: r.str_limited("method", MAX_NAME_LEN)?.to_string(),
            args: r.bytes_limited("args", MAX_ARGS_LEN)?.to_vec(),
        };
        r.finish()?;
        Ok(body)
    }

    /// The exact bytes that are signed: domain tag, then the body encoding.
    pub fn signing_message(body_bytes: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(TX_DOMAIN.len() + body_bytes.len());
        m.extend_from_slice(TX_DOMAIN);
        m.extend_from_slice(body_bytes);
        m
    }

    pub fn sign(self, key: &SigningKey, hash: HashAlg) -> SignedTx {
        let body_bytes = self.encode();
        let sig = key.sign(&Self::signing_message(&body_bytes));
        SignedTx::assemble(self, body_bytes, sig, hash)
    }
}

/// A signed transaction with its canonical bytes and id cached. Its id is the hash of the
/// signed bytes, so two different signatures over one body are two different transactions,
/// and the per-sender nonce makes sure at most one of them is ever applied.
#[derive(Debug, Clone)]
pub struct SignedTx {
    pub body: TxBody,
    pub signature: Signature,
    bytes: Arc<[u8]>,
    body_range: (usize, usize),
    id: Digest,
}

impl SignedTx {
    fn assemble(body: TxBody, body_bytes: Vec<u8>, signature: Signature, hash: HashAlg) -> Self {
        let mut w = Writer::with_capacity(body_bytes.len() + 80);
        w.bytes(&body_bytes).signature(&signature);
        let bytes: Arc<[u8]> = w.finish().into();
        let id = hash.digest(&bytes);
        Self {
            body,
            signature,
            body_range: (4, 4 + body_bytes.len()),
            bytes,
            id,
        }
    }

    pub fn decode(data: &[u8], hash: HashAlg) -> Result<Self, DecodeError> {
        let mut r = Reader::new(data);
        let body_bytes = r.bytes_limited("body", MAX_ARGS_LEN + 4096)?;
        let signature = r.signature("signature")?;
        r.finish()?;
        let body = TxBody::decode(body_bytes)?;
        Ok(Self {
            body,
            signature,
            body_range: (4, 4 + body_bytes.len()),
            bytes: data.into(),
            id: hash.digest(data),
        })
    }

    pub fn id(&self) -> Digest {
        self.id
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn body_bytes(&self) -> &[u8] {
        &self.bytes[self.body_range.0..self.body_range.1]
    }
    pub fn signing_message(&self) -> Vec<u8> {
        TxBody::signing_message(self.body_bytes())
    }
    pub fn verify_signature(&self) -> Result<(), crate::crypto::CryptoError> {
        self.body
            .sender
            .verify(&self.signing_message(), &self.signature)
    }
}

/// One validator: its consensus key and voting power. Network addresses are configuration,
/// not chain data, so they are not part of the set's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Validator {
    pub public_key: PublicKey,
    pub power: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
}

impl ValidatorSet {
    /// Builds the canonical (sorted, de-duplicated) set. Zero-power entries are dropped.
    pub fn new(mut validators: Vec<Validator>) -> Result<Self, DecodeError> {
        validators.retain(|v| v.power > 0);
        validators.sort_by(|a, b| a.public_key.cmp(&b.public_key));
        for w in validators.windows(2) {
            if w[0].public_key == w[1].public_key {
                return Err(DecodeError::Invalid {
                    what: "validator set",
                    reason: format!("duplicate validator {}", w[0].public_key),
                });
            }
        }
        if validators.is_empty() {
            return Err(DecodeError::Invalid {
                what: "validator set",
                reason: "no validator with positive power".into(),
            });
        }
        let total: u128 = validators.iter().map(|v| v.power as u128).sum();
        if total > u64::MAX as u128 / 4 {
            return Err(DecodeError::Invalid {
                what: "validator set",
                reason: "total voting power too large".into(),
            });
        }
        Ok(Self { validators })
    }
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }
    pub fn total_power(&self) -> u64 {
        self.validators.iter().map(|v| v.power).sum()
    }
    pub fn index_of(&self, key: &PublicKey) -> Option<usize> {
        self.validators.iter().position(|v| &v.public_key == key)
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.list(&self.validators, |w, v| {
            w.public_key(&v.public_key).u64(v.power);
        });
        w.finish()
    }
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(data);
        let vals = r.list("validators", 10_000, |r| {
            Ok(Validator {
                public_key: r.public_key("validator key")?,
                power: r.u64("power")?,
            })
        })?;
        r.finish()?;
        let set = Self::new(vals.clone())?;
        if set.validators != vals {
            return Err(DecodeError::Invalid {
                what: "validator set",
                reason: "not in canonical order".into(),
            });
        }
        Ok(set)
    }
    pub fn hash(&self, alg: HashAlg) -> Digest {
        alg.digest(&self.encode())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockHeader {
    pub chain_id: String,
    pub height: u64,
    pub time_ms: u64,
    /// Number of transactions; commits the size of the `tx_root` tree so a proof's index and
    /// count are bound to the block.
    pub tx_count: u32,
    pub prev_hash: Digest,
    pub tx_root: Digest,
    pub receipt_root: Digest,
    pub state_root: Digest,
    pub validator_set_hash: Digest,
    pub proposer: PublicKey,
}

impl BlockHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        w.u8(ENCODING_VERSION)
            .str(&self.chain_id)
            .u64(self.height)
            .u64(self.time_ms)
            .u32(self.tx_count)
            .digest(&self.prev_hash)
            .digest(&self.tx_root)
            .digest(&self.receipt_root)
            .digest(&self.state_root)
            .digest(&self.validator_set_hash)
            .public_key(&self.proposer);
        w.finish()
    }
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(data);
        let v = r.u8("version")?;
        if v != ENCODING_VERSION {
            return Err(DecodeError::Version(v));
        }
        let h = Self {
            chain_id: r.str_limited("chain_id", MAX_CHAIN_ID_LEN)?.to_string(),
            height: r.u64("height")?,
            time_ms: r.u64("time_ms")?,
            tx_count: r.u32("tx_count")?,
            prev_hash: r.digest("prev_hash")?,
            tx_root: r.digest("tx_root")?,
            receipt_root: r.digest("receipt_root")?,
            state_root: r.digest("state_root")?,
            validator_set_hash: r.digest("validator_set_hash")?,
            proposer: r.public_key("proposer")?,
        };
        r.finish()?;
        Ok(h)
    }
    pub fn hash(&self) -> Digest {
        self.prev_hash.alg.digest(&self.encode())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitSig {
    pub validator_index: u32,
    pub signature: Signature,
}

/// Proof that the validators decided a block: precommit signatures from more than 2/3 of the
/// voting power. Produced by whichever consensus engine runs; the format does not change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitCertificate {
    pub height: u64,
    pub round: u32,
    pub block_hash: Digest,
    pub signatures: Vec<CommitSig>,
}

impl CommitCertificate {
    pub fn precommit_message(
        chain_id: &str,
        height: u64,
        round: u32,
        block_hash: &Digest,
    ) -> Vec<u8> {
        let mut w = Writer::with_capacity(96);
        w.raw(PRECOMMIT_DOMAIN)
            .str(chain_id)
            .u64(height)
            .u32(round)
            .digest(block_hash);
        w.finish()
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.height)
            .u32(self.round)
            .digest(&self.block_hash)
            .list(&self.signatures, |w, s| {
                w.u32(s.validator_index).signature(&s.signature);
            });
        w.finish()
    }
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(data);
        let c = Self {
            height: r.u64("height")?,
            round: r.u32("round")?,
            block_hash: r.digest("block_hash")?,
            signatures: r.list("signatures", 10_000, |r| {
                Ok(CommitSig {
                    validator_index: r.u32("validator_index")?,
                    signature: r.signature("signature")?,
                })
            })?,
        };
        r.finish()?;
        Ok(c)
    }

    /// Checks the certificate against a validator set: distinct known signers, valid
    /// signatures, strictly more than 2/3 of total power.
    pub fn verify(
        &self,
        chain_id: &str,
        header: &BlockHeader,
        set: &ValidatorSet,
    ) -> Result<(), CommitError> {
        let block_hash = header.hash();
        if self.height != header.height {
            return Err(CommitError::WrongHeight);
        }
        if self.block_hash != block_hash {
            return Err(CommitError::WrongBlock);
        }
        if header.validator_set_hash != set.hash(block_hash.alg) {
            return Err(CommitError::WrongValidatorSet);
        }
        let msg = Self::precommit_message(chain_id, self.height, self.round, &self.block_hash);
        let mut seen = vec![false; set.validators().len()];
        let mut power: u128 = 0;
        for s in &self.signatures {
            let i = s.validator_index as usize;
            let v = set
                .validators()
                .get(i)
                .ok_or(CommitError::UnknownSigner(i))?;
            if std::mem::replace(&mut seen[i], true) {
                return Err(CommitError::DuplicateSigner(i));
            }
            v.public_key
                .verify(&msg, &s.signature)
                .map_err(|_| CommitError::BadSignature(i))?;
            power += v.power as u128;
        }
        if power * 3 <= set.total_power() as u128 * 2 {
            return Err(CommitError::InsufficientPower {
                signed: power as u64,
                total: set.total_power(),
            });
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CommitError {
    #[error("certificate height does not match the header")]
    WrongHeight,
    #[error("certificate is for a different block")]
    WrongBlock,
    #[error("header's validator set hash does not match the trusted validator set")]
    WrongValidatorSet,
    #[error("signer index {0} is not in the validator set")]
    UnknownSigner(usize),
    #[error("validator {0} signed twice")]
    DuplicateSigner(usize),
    #[error("signature of validator {0} does not verify")]
    BadSignature(usize),
    #[error("signers hold {signed} of {total} voting power; more than 2/3 is required")]
    InsufficientPower { signed: u64, total: u64 },
}

/// An event emitted by a contract. `data` is UTF-8 JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub contract: String,
    pub kind: String,
    #[serde(serialize_with = "json_bytes")]
    pub data: Vec<u8>,
}

fn json_bytes<S: serde::Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(v) => v.serialize(s),
        Err(_) => s.serialize_str(&hex::encode(data)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TxStatus {
    Ok = 0,
    Failed = 1,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub tx_id: Digest,
    pub status: TxStatus,
    /// Stable machine-readable error code; empty on success.
    pub code: String,
    pub message: String,
    pub events: Vec<Event>,
}

impl Receipt {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.digest(&self.tx_id)
            .u8(self.status as u8)
            .str(&self.code)
            .str(&self.message)
            .list(&self.events, |w, e| {
                w.str(&e.contract).str(&e.kind).bytes(&e.data);
            });
        w.finish()
    }
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(data);
        let rc = Self {
            tx_id: r.digest("tx_id")?,
            status: match r.u8("status")? {
                0 => TxStatus::Ok,
                1 => TxStatus::Failed,
                other => {
                    return Err(DecodeError::Invalid {
                        what: "status",
                        reason: format!("unknown status {other}"),
                    });
                }
            },
            code: r.str("code")?.to_string(),
            message: r.str("message")?.to_string(),
            events: r.list("events", 100_000, |r| {
                Ok(Event {
                    contract: r.str("event contract")?.to_string(),
                    kind: r.str("event kind")?.to_string(),
                    data: r.bytes("event data")?.to_vec(),
                })
            })?,
        };
        r.finish()?;
        Ok(rc)
    }
}

/// A complete block: header, ordered transactions and the certificate that decided it.
#[derive(Debug, Clone)]
pub struct Block {
    pub header: BlockHeader,
    pub txs: Vec<SignedTx>,
    pub commit: CommitCertificate,
}

impl Block {
    pub fn hash(&self) -> Digest {
        self.header.hash()
    }
}

/// Convenience for building transactions in clients, tests and the CLI.
#[allow(clippy::too_many_arguments)]
pub fn build_tx(
    suite: Suite,
    chain_id: &str,
    key: &SigningKey,
    nonce: u64,
    expiry_ms: u64,
    contract: &str,
    method: &str,
    args: Vec<u8>,
) -> SignedTx {
    TxBody {
        chain_id: chain_id.to_string(),
        sender: key.public_key(),
        nonce,
        expiry_ms,
        contract: contract.to_string(),
        method: method.to_string(),
        args,
    }
    .sign(key, suite.hash())
}

/// Property tests of the canonical encoding: every value round-trips, decoding is strict, and
/// signed transactions cannot be altered without detection.
#[cfg(test)]
mod encoding_props {
    use super::*;
    use crate::crypto::SigAlg;
    use proptest::prelude::*;

    fn sig_alg() -> impl Strategy<Value = SigAlg> {
        prop_oneof![Just(SigAlg::Ed25519), Just(SigAlg::Sm2)]
    }

    fn hash_alg() -> impl Strategy<Value = HashAlg> {
        prop_oneof![Just(HashAlg::Sha256), Just(HashAlg::Sm3)]
    }

    fn suite() -> impl Strategy<Value = Suite> {
        prop_oneof![Just(Suite::Ed25519Sha256), Just(Suite::Sm2Sm3)]
    }

    fn key(alg: SigAlg, seed: u64) -> SigningKey {
        SigningKey::from_label(alg, &format!("prop-{seed}"))
    }

    fn public_key() -> impl Strategy<Value = PublicKey> {
        (sig_alg(), any::<u64>()).prop_map(|(a, s)| key(a, s).public_key())
    }

    fn digest() -> impl Strategy<Value = Digest> {
        (hash_alg(), any::<[u8; 32]>()).prop_map(|(alg, bytes)| Digest { alg, bytes })
    }

    fn signature() -> impl Strategy<Value = Signature> {
        (sig_alg(), prop::collection::vec(any::<u8>(), 64))
            .prop_map(|(a, b)| Signature::new(a, b).unwrap())
    }

    /// Up to 16 characters of any script: at most 64 bytes, the limit of names and chain ids.
    fn name() -> impl Strategy<Value = String> {
        "\\PC{0,16}"
    }

    fn tx_body(alg: SigAlg, seed: u64) -> impl Strategy<Value = TxBody> {
        (
            name(),
            any::<u64>(),
            any::<u64>(),
            name(),
            name(),
            prop::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(
                move |(chain_id, nonce, expiry_ms, contract, method, args)| TxBody {
                    chain_id,
                    sender: key(alg, seed).public_key(),
                    nonce,
                    expiry_ms,
                    contract,
                    method,
                    args,
                },
            )
    }

    fn header() -> impl Strategy<Value = BlockHeader> {
        (
            name(),
            any::<u64>(),
            (any::<u64>(), any::<u32>()),
            (digest(), digest(), digest(), digest(), digest()),
            public_key(),
        )
            .prop_map(
                |(chain_id, height, (time_ms, tx_count), d, proposer)| BlockHeader {
                    chain_id,
                    height,
                    time_ms,
                    tx_count,
                    prev_hash: d.0,
                    tx_root: d.1,
                    receipt_root: d.2,
                    state_root: d.3,
                    validator_set_hash: d.4,
                    proposer,
                },
            )
    }

    fn certificate() -> impl Strategy<Value = CommitCertificate> {
        (
            any::<u64>(),
            any::<u32>(),
            digest(),
            prop::collection::vec(
                (any::<u32>(), signature()).prop_map(|(validator_index, signature)| CommitSig {
                    validator_index,
                    signature,
                }),
                0..6,
            ),
        )
            .prop_map(
                |(height, round, block_hash, signatures)| CommitCertificate {
                    height,
                    round,
                    block_hash,
                    signatures,
                },
            )
    }

    fn receipt() -> impl Strategy<Value = Receipt> {
        (
            digest(),
            prop_oneof![Just(TxStatus::Ok), Just(TxStatus::Failed)],
            "\\PC{0,20}",
            "\\PC{0,40}",
            prop::collection::vec(
                (name(), name(), prop::collection::vec(any::<u8>(), 0..80)).prop_map(
                    |(contract, kind, data)| Event {
                        contract,
                        kind,
                        data,
                    },
                ),
                0..4,
            ),
        )
            .prop_map(|(tx_id, status, code, message, events)| Receipt {
                tx_id,
                status,
                code,
                message,
                events,
            })
    }

    fn validator_set() -> impl Strategy<Value = ValidatorSet> {
        (
            sig_alg(),
            prop::collection::btree_set(any::<u32>(), 1..6),
            prop::collection::vec(1u64..=u64::MAX / 64, 6),
        )
            .prop_map(|(alg, seeds, powers)| {
                let vals = seeds
                    .into_iter()
                    .zip(powers)
                    .map(|(s, power)| Validator {
                        public_key: key(alg, s as u64).public_key(),
                        power,
                    })
                    .collect();
                ValidatorSet::new(vals).unwrap()
            })
    }

    /// Every strict prefix and every one-byte extension of `bytes` must fail to decode.
    fn assert_strict<T: std::fmt::Debug>(
        bytes: &[u8],
        decode: impl Fn(&[u8]) -> Result<T, DecodeError>,
    ) -> Result<(), TestCaseError> {
        for n in 0..bytes.len() {
            prop_assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        for extra in [0u8, 1, 0xff] {
            let mut longer = bytes.to_vec();
            longer.push(extra);
            prop_assert!(
                matches!(decode(&longer), Err(DecodeError::Trailing(1))),
                "trailing byte accepted"
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn tx_body_and_signed_tx_round_trip(
            (alg, seed, body) in (sig_alg(), any::<u64>())
                .prop_flat_map(|(a, s)| (Just(a), Just(s), tx_body(a, s))),
            h in hash_alg(),
        ) {
            let bytes = body.encode();
            prop_assert_eq!(&TxBody::decode(&bytes).unwrap(), &body);
            assert_strict(&bytes, TxBody::decode)?;

            let k = key(alg, seed);
            let stx = body.clone().sign(&k, h);
            prop_assert_eq!(stx.body_bytes(), bytes.as_slice());
            prop_assert_eq!(stx.id(), h.digest(stx.bytes()));
            prop_assert!(stx.verify_signature().is_ok());
            let back = SignedTx::decode(stx.bytes(), h).unwrap();
            prop_assert_eq!(&back.body, &body);
            prop_assert_eq!(&back.signature, &stx.signature);
            prop_assert_eq!(back.id(), stx.id());
            prop_assert_eq!(back.bytes(), stx.bytes());
            prop_assert_eq!(back.body_bytes(), stx.body_bytes());
            prop_assert!(back.verify_signature().is_ok());
            assert_strict(stx.bytes(), |b| SignedTx::decode(b, h))?;
        }

        #[test]
        fn block_header_round_trip(hd in header()) {
            let bytes = hd.encode();
            let back = BlockHeader::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &hd);
            prop_assert_eq!(back.hash(), hd.hash());
            assert_strict(&bytes, BlockHeader::decode)?;
        }

        #[test]
        fn commit_certificate_round_trip(c in certificate()) {
            let bytes = c.encode();
            prop_assert_eq!(&CommitCertificate::decode(&bytes).unwrap(), &c);
            assert_strict(&bytes, CommitCertificate::decode)?;
        }

        #[test]
        fn receipt_round_trip(r in receipt()) {
            let bytes = r.encode();
            prop_assert_eq!(&Receipt::decode(&bytes).unwrap(), &r);
            assert_strict(&bytes, Receipt::decode)?;
        }

        #[test]
        fn validator_set_round_trip(set in validator_set(), h in hash_alg()) {
            let bytes = set.encode();
            let back = ValidatorSet::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &set);
            prop_assert_eq!(back.hash(h), set.hash(h));
            assert_strict(&bytes, ValidatorSet::decode)?;
            // The same validators in another order are not the canonical encoding.
            if set.validators().len() > 1 {
                let mut w = Writer::new();
                let mut rev = set.validators().to_vec();
                rev.reverse();
                w.list(&rev, |w, v| {
                    w.public_key(&v.public_key).u64(v.power);
                });
                prop_assert!(ValidatorSet::decode(&w.finish()).is_err());
            }
        }

        /// A single flipped bit anywhere in a signed transaction is caught: the bytes no longer
        /// decode, or the signature no longer verifies (and the id always changes).
        #[test]
        fn any_bit_flip_in_a_signed_tx_is_detected(
            (alg, seed, body) in (sig_alg(), any::<u64>())
                .prop_flat_map(|(a, s)| (Just(a), Just(s), tx_body(a, s))),
            s in suite(),
            picks in prop::collection::vec(any::<prop::sample::Index>(), 24),
        ) {
            let stx = body.sign(&key(alg, seed), s.hash());
            let bits = stx.bytes().len() * 8;
            for p in picks {
                let bit = p.index(bits);
                prop_assert!(flip_detected(&stx, s.hash(), bit), "bit {} of {} undetected", bit, bits);
            }
        }
    }

    fn flip_detected(stx: &SignedTx, h: HashAlg, bit: usize) -> bool {
        let mut bad = stx.bytes().to_vec();
        bad[bit / 8] ^= 0x80 >> (bit % 8);
        match SignedTx::decode(&bad, h) {
            Err(_) => true,
            Ok(t) => {
                assert_ne!(t.id(), stx.id(), "a different byte string has the same id");
                t.verify_signature().is_err()
            }
        }
    }

    /// Every bit of one transaction per suite, exhaustively.
    #[test]
    fn every_bit_flip_is_detected_in_both_suites() {
        for s in [Suite::Ed25519Sha256, Suite::Sm2Sm3] {
            let k = SigningKey::from_label(s.sig(), "flip");
            let stx = build_tx(
                s,
                "chain-1",
                &k,
                7,
                1_700_000_000_000,
                "notary",
                "anchor",
                br#"{"key":"k","hash":"00"}"#.to_vec(),
            );
            for bit in 0..stx.bytes().len() * 8 {
                assert!(flip_detected(&stx, s.hash(), bit), "{s}: bit {bit}");
            }
        }
    }

    #[test]
    fn signature_over_another_chain_or_domain_fails() {
        let k = SigningKey::from_label(SigAlg::Ed25519, "domain");
        let body = TxBody {
            chain_id: "a".into(),
            sender: k.public_key(),
            nonce: 0,
            expiry_ms: 1,
            contract: "notary".into(),
            method: "anchor".into(),
            args: vec![],
        };
        // A signature over the body bytes without the domain tag is not a transaction signature.
        let raw_sig = k.sign(&body.encode());
        let mut w = Writer::new();
        w.bytes(&body.encode()).signature(&raw_sig);
        let stx = SignedTx::decode(&w.finish(), HashAlg::Sha256).unwrap();
        assert!(stx.verify_signature().is_err());
        // Swapping in a signature made for another chain id fails too.
        let other = TxBody {
            chain_id: "b".into(),
            ..body.clone()
        }
        .sign(&k, HashAlg::Sha256);
        let mut w = Writer::new();
        w.bytes(&body.encode()).signature(&other.signature);
        let stx = SignedTx::decode(&w.finish(), HashAlg::Sha256).unwrap();
        assert!(stx.verify_signature().is_err());
    }
}
