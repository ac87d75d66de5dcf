//! Crypto suites. Every key, signature and digest carries its algorithm id, so a chain's
//! suite (chosen at genesis) is visible in every encoded value and a verifier never guesses.
//!
//! Two suites: Ed25519 + SHA-256 (default) and SM2 + SM3 (国密). Primitives come from the
//! RustCrypto / dalek crates; nothing here implements a curve or a hash.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;
use zeroize::Zeroizing;

/// The distinguishing identifier used with SM2 signatures (GB/T 32918 default user ID).
pub const SM2_DIST_ID: &str = "1234567812345678";

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    #[error("unknown algorithm id {0}")]
    UnknownAlgorithm(u8),
    #[error("unknown algorithm name `{0}`")]
    UnknownAlgorithmName(String),
    #[error("invalid public key: {0}")]
    InvalidKey(String),
    #[error("invalid signature encoding")]
    InvalidSignatureEncoding,
    #[error("signature does not verify")]
    BadSignature,
    #[error("algorithm mismatch: expected {expected}, got {got}")]
    AlgorithmMismatch { expected: String, got: String },
    #[error("invalid hex: {0}")]
    Hex(String),
}

/// Signature algorithm id, as encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SigAlg {
    Ed25519 = 1,
    Sm2 = 2,
}

impl SigAlg {
    pub fn from_id(id: u8) -> Result<Self, CryptoError> {
        match id {
            1 => Ok(Self::Ed25519),
            2 => Ok(Self::Sm2),
            other => Err(CryptoError::UnknownAlgorithm(other)),
        }
    }
    pub fn id(self) -> u8 {
        self as u8
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::Sm2 => "sm2",
        }
    }
    pub fn public_key_len(self) -> usize {
        match self {
            Self::Ed25519 => 32,
            Self::Sm2 => 65,
        }
    }
    pub fn signature_len(self) -> usize {
        64
    }
}

/// Hash algorithm id, as encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlg {
    Sha256 = 1,
    Sm3 = 2,
}

impl HashAlg {
    pub fn from_id(id: u8) -> Result<Self, CryptoError> {
        match id {
            1 => Ok(Self::Sha256),
            2 => Ok(Self::Sm3),
            other => Err(CryptoError::UnknownAlgorithm(other)),
        }
    }
    pub fn id(self) -> u8 {
        self as u8
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sm3 => "sm3",
        }
    }
    pub fn digest(self, data: &[u8]) -> Digest {
        self.digest_parts(&[data])
    }
    /// Hash the concatenation of `parts` without copying them together.
    pub fn digest_parts(self, parts: &[&[u8]]) -> Digest {
        let bytes: [u8; 32] = match self {
            Self::Sha256 => {
                let mut h = sha2::Sha256::new();
                for p in parts {
                    h.update(p);
                }
                h.finalize().into()
            }
            Self::Sm3 => {
                let mut h = sm3::Sm3::new();
                for p in parts {
                    sm3::Digest::update(&mut h, p);
                }
                sm3::Digest::finalize(h).into()
            }
        };
        Digest { alg: self, bytes }
    }
}

/// A chain's crypto suite, fixed at genesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    Ed25519Sha256,
    Sm2Sm3,
}

impl Suite {
    pub fn sig(self) -> SigAlg {
        match self {
            Self::Ed25519Sha256 => SigAlg::Ed25519,
            Self::Sm2Sm3 => SigAlg::Sm2,
        }
    }
    pub fn hash(self) -> HashAlg {
        match self {
            Self::Ed25519Sha256 => HashAlg::Sha256,
            Self::Sm2Sm3 => HashAlg::Sm3,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Ed25519Sha256 => "ed25519-sha256",
            Self::Sm2Sm3 => "sm2-sm3",
        }
    }
}

impl FromStr for Suite {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ed25519-sha256" => Ok(Self::Ed25519Sha256),
            "sm2-sm3" => Ok(Self::Sm2Sm3),
            other => Err(CryptoError::UnknownAlgorithmName(other.to_string())),
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Suite {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Suite {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A 32-byte digest together with the algorithm that produced it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    pub alg: HashAlg,
    pub bytes: [u8; 32],
}

impl Digest {
    pub fn zero(alg: HashAlg) -> Self {
        Self { alg, bytes: [0; 32] }
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }
    /// Parse 64 hex characters as a digest of the given algorithm.
    pub fn from_hex(alg: HashAlg, s: &str) -> Result<Self, CryptoError> {
        let v = hex::decode(s).map_err(|e| CryptoError::Hex(e.to_string()))?;
        let bytes: [u8; 32] = v
            .try_into()
            .map_err(|_| CryptoError::Hex("a digest is 32 bytes (64 hex characters)".into()))?;
        Ok(Self { alg, bytes })
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg.name(), self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// A public key tagged with its algorithm. The byte form is validated on construction,
/// so a `PublicKey` value always names a point on its curve.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey {
    alg: SigAlg,
    bytes: Vec<u8>,
}

impl PublicKey {
    pub fn from_bytes(alg: SigAlg, bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != alg.public_key_len() {
            return Err(CryptoError::InvalidKey(format!(
                "{} public keys are {} bytes, got {}",
                alg.name(),
                alg.public_key_len(),
                bytes.len()
            )));
        }
        match alg {
            SigAlg::Ed25519 => {
                let arr: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| CryptoError::InvalidKey("length".into()))?;
                let vk = ed25519_dalek::VerifyingKey::from_bytes(&arr)
                    .map_err(|_| CryptoError::InvalidKey("not an Ed25519 point".into()))?;
                // Small-order keys make batch and single verification disagree; refuse them.
                if vk.is_weak() {
                    return Err(CryptoError::InvalidKey("weak (small-order) Ed25519 key".into()));
                }
            }
            SigAlg::Sm2 => {
                sm2::dsa::VerifyingKey::from_sec1_bytes(SM2_DIST_ID, bytes)
                    .map_err(|_| CryptoError::InvalidKey("not an SM2 point".into()))?;
            }
        }
        Ok(Self {
            alg,
            bytes: bytes.to_vec(),
        })
    }
    pub fn alg(&self) -> SigAlg {
        self.alg
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// `ed25519:<hex>` / `sm2:<hex>`: the text form used in JSON and URLs.
    pub fn to_text(&self) -> String {
        format!("{}:{}", self.alg.name(), hex::encode(&self.bytes))
    }
    /// W3C `did:key` form. Ed25519 uses multicodec 0xed; SM2 uses the multicodec `sm2-pub`
    /// (0x1206) over the compressed point so SM2 accounts also get a stable DID.
    pub fn did(&self) -> String {
        let mut buf = Vec::with_capacity(40);
        match self.alg {
            SigAlg::Ed25519 => {
                buf.extend_from_slice(&[0xed, 0x01]);
                buf.extend_from_slice(&self.bytes);
            }
            SigAlg::Sm2 => {
                // varint(0x1206) = 0x86 0x24
                buf.extend_from_slice(&[0x86, 0x24]);
                let y_odd = self.bytes[64] & 1;
                buf.push(0x02 | y_odd);
                buf.extend_from_slice(&self.bytes[1..33]);
            }
        }
        format!("did:key:z{}", bs58::encode(buf).into_string())
    }
    /// Parse the ed25519 `did:key` form back to a key (SM2 DIDs are display-only).
    pub fn from_did(did: &str) -> Result<Self, CryptoError> {
        let rest = did
            .strip_prefix("did:key:z")
            .ok_or_else(|| CryptoError::InvalidKey("not a base58btc did:key".into()))?;
        let raw = bs58::decode(rest)
            .into_vec()
            .map_err(|e| CryptoError::InvalidKey(e.to_string()))?;
        match raw.as_slice() {
            [0xed, 0x01, key @ ..] => Self::from_bytes(SigAlg::Ed25519, key),
            _ => Err(CryptoError::InvalidKey(
                "only Ed25519 did:key values can be parsed".into(),
            )),
        }
    }
    /// Verify one signature over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), CryptoError> {
        if sig.alg != self.alg {
            return Err(CryptoError::AlgorithmMismatch {
                expected: self.alg.name().into(),
                got: sig.alg.name().into(),
            });
        }
        match self.alg {
            SigAlg::Ed25519 => {
                let vk = self.ed25519()?;
                let s = ed25519_dalek::Signature::from_slice(&sig.bytes)
                    .map_err(|_| CryptoError::InvalidSignatureEncoding)?;
                vk.verify_strict(msg, &s)
                    .map_err(|_| CryptoError::BadSignature)
            }
            SigAlg::Sm2 => {
                use signature::Verifier;
                let vk = sm2::dsa::VerifyingKey::from_sec1_bytes(SM2_DIST_ID, &self.bytes)
                    .map_err(|_| CryptoError::InvalidKey("not an SM2 point".into()))?;
                let s = sm2::dsa::Signature::from_slice(&sig.bytes)
                    .map_err(|_| CryptoError::InvalidSignatureEncoding)?;
                vk.verify(msg, &s).map_err(|_| CryptoError::BadSignature)
            }
        }
    }
    fn ed25519(&self) -> Result<ed25519_dalek::VerifyingKey, CryptoError> {
        let arr: [u8; 32] = self
            .bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::InvalidKey("length".into()))?;
        ed25519_dalek::VerifyingKey::from_bytes(&arr)
            .map_err(|_| CryptoError::InvalidKey("not an Ed25519 point".into()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl FromStr for PublicKey {
    type Err = CryptoError;
    /// Accepts `ed25519:<hex>`, `sm2:<hex>` or an Ed25519 `did:key`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("did:key:") {
            return Self::from_did(s);
        }
        let (alg, hex_part) = s
            .split_once(':')
            .ok_or_else(|| CryptoError::InvalidKey("expected `<alg>:<hex>`".into()))?;
        let alg = match alg {
            "ed25519" => SigAlg::Ed25519,
            "sm2" => SigAlg::Sm2,
            other => return Err(CryptoError::UnknownAlgorithmName(other.into())),
        };
        let bytes = hex::decode(hex_part).map_err(|e| CryptoError::Hex(e.to_string()))?;
        Self::from_bytes(alg, &bytes)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_text())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A signature tagged with its algorithm.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    pub alg: SigAlg,
    pub bytes: Vec<u8>,
}

impl Signature {
    pub fn new(alg: SigAlg, bytes: Vec<u8>) -> Result<Self, CryptoError> {
        if bytes.len() != alg.signature_len() {
            return Err(CryptoError::InvalidSignatureEncoding);
        }
        Ok(Self { alg, bytes })
    }
    pub fn to_text(&self) -> String {
        format!("{}:{}", self.alg.name(), hex::encode(&self.bytes))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_text())
    }
}

/// A private signing key. Secret bytes are zeroised on drop and never printed.
pub enum SigningKey {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    Sm2(Box<sm2::dsa::SigningKey>),
}

impl SigningKey {
    /// Generate a fresh key from the operating system's CSPRNG.
    pub fn generate(alg: SigAlg) -> Self {
        loop {
            let mut seed = Zeroizing::new([0u8; 32]);
            // The OS RNG failing is not a recoverable condition for key generation.
            if let Err(e) = getrandom::fill(seed.as_mut()) {
                panic!("operating system random number generator failed: {e}");
            }
            if let Ok(k) = Self::from_seed(alg, seed.as_ref()) {
                return k;
            }
        }
    }
    /// Rebuild a key from its 32 secret bytes (Ed25519 seed, or SM2 scalar).
    pub fn from_seed(alg: SigAlg, seed: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 32] = seed
            .try_into()
            .map_err(|_| CryptoError::InvalidKey("secret keys are 32 bytes".into()))?;
        match alg {
            SigAlg::Ed25519 => Ok(Self::Ed25519(Box::new(
                ed25519_dalek::SigningKey::from_bytes(&arr),
            ))),
            SigAlg::Sm2 => {
                let k = sm2::dsa::SigningKey::from_slice(SM2_DIST_ID, &arr)
                    .map_err(|_| CryptoError::InvalidKey("not a valid SM2 scalar".into()))?;
                Ok(Self::Sm2(Box::new(k)))
            }
        }
    }
    /// Derive a key deterministically from a label (demo and test fixtures only).
    pub fn from_label(alg: SigAlg, label: &str) -> Self {
        let mut counter = 0u32;
        loop {
            let d = HashAlg::Sha256.digest_parts(&[
                b"trellis/demo-key\0",
                label.as_bytes(),
                &counter.to_be_bytes(),
            ]);
            if let Ok(k) = Self::from_seed(alg, &d.bytes) {
                return k;
            }
            counter += 1;
        }
    }
    pub fn alg(&self) -> SigAlg {
        match self {
            Self::Ed25519(_) => SigAlg::Ed25519,
            Self::Sm2(_) => SigAlg::Sm2,
        }
    }
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        match self {
            Self::Ed25519(k) => Zeroizing::new(k.to_bytes()),
            Self::Sm2(k) => {
                let mut out = Zeroizing::new([0u8; 32]);
                out.copy_from_slice(&k.to_bytes());
                out
            }
        }
    }
    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::Ed25519(k) => PublicKey {
                alg: SigAlg::Ed25519,
                bytes: k.verifying_key().to_bytes().to_vec(),
            },
            Self::Sm2(k) => PublicKey {
                alg: SigAlg::Sm2,
                bytes: k.verifying_key().to_sec1_bytes().to_vec(),
            },
        }
    }
    pub fn sign(&self, msg: &[u8]) -> Signature {
        use signature::Signer;
        match self {
            Self::Ed25519(k) => Signature {
                alg: SigAlg::Ed25519,
                bytes: k.sign(msg).to_bytes().to_vec(),
            },
            Self::Sm2(k) => {
                let s: sm2::dsa::Signature = k.sign(msg);
                Signature {
                    alg: SigAlg::Sm2,
                    bytes: s.to_bytes().to_vec(),
                }
            }
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public_key())
    }
}

/// One item of a batch verification.
pub struct VerifyItem<'a> {
    pub key: &'a PublicKey,
    pub msg: &'a [u8],
    pub sig: &'a Signature,
}

/// Verify many signatures; returns one result per item, in order.
///
/// Ed25519 items are checked in batches of 64 (one multiscalar multiplication per batch) spread
/// over the rayon pool; a failing batch falls back to per-item checks so the caller learns which
/// signature is bad. SM2 has no batch form and is checked item by item, in parallel.
pub fn verify_batch(items: &[VerifyItem<'_>]) -> Vec<Result<(), CryptoError>> {
    use rayon::prelude::*;
    const CHUNK: usize = 64;
    items
        .par_chunks(CHUNK)
        .flat_map_iter(|chunk| verify_chunk(chunk).into_iter())
        .collect()
}

fn verify_chunk(chunk: &[VerifyItem<'_>]) -> Vec<Result<(), CryptoError>> {
    let all_ed = chunk
        .iter()
        .all(|i| i.key.alg == SigAlg::Ed25519 && i.sig.alg == SigAlg::Ed25519);
    if all_ed && chunk.len() > 1 {
        let mut msgs = Vec::with_capacity(chunk.len());
        let mut sigs = Vec::with_capacity(chunk.len());
        let mut keys = Vec::with_capacity(chunk.len());
        let mut decodable = true;
        for item in chunk {
            match (
                item.key.ed25519(),
                ed25519_dalek::Signature::from_slice(&item.sig.bytes),
            ) {
                (Ok(k), Ok(s)) => {
                    msgs.push(item.msg);
                    sigs.push(s);
                    keys.push(k);
                }
                _ => {
                    decodable = false;
                    break;
                }
            }
        }
        if decodable && ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok() {
            return vec![Ok(()); chunk.len()];
        }
    }
    chunk
        .iter()
        .map(|i| i.key.verify(i.msg, i.sig))
        .collect()
}

/// Hashers for the Jellyfish Merkle tree, one per suite.
pub mod jmt_hashers {
    use sha2::Digest as _;

    #[derive(Clone)]
    pub struct Sha256Hasher(sha2::Sha256);
    impl jmt::SimpleHasher for Sha256Hasher {
        fn new() -> Self {
            Self(sha2::Sha256::new())
        }
        fn update(&mut self, data: &[u8]) {
            self.0.update(data)
        }
        fn finalize(self) -> [u8; 32] {
            self.0.finalize().into()
        }
    }

    #[derive(Clone)]
    pub struct Sm3Hasher(sm3::Sm3);
    impl jmt::SimpleHasher for Sm3Hasher {
        fn new() -> Self {
            Self(sm3::Digest::new())
        }
        fn update(&mut self, data: &[u8]) {
            sm3::Digest::update(&mut self.0, data)
        }
        fn finalize(self) -> [u8; 32] {
            sm3::Digest::finalize(self.0).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sm3_gbt32905_vectors() {
        // GB/T 32905-2016 Appendix A.1 and A.2.
        let d = HashAlg::Sm3.digest(b"abc");
        assert_eq!(
            d.to_hex(),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        let m = b"abcd".repeat(16);
        assert_eq!(
            HashAlg::Sm3.digest(&m).to_hex(),
            "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
        );
    }

    #[test]
    fn sha256_vector() {
        assert_eq!(
            HashAlg::Sha256.digest(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn sign_verify_both_suites() {
        for alg in [SigAlg::Ed25519, SigAlg::Sm2] {
            let k = SigningKey::generate(alg);
            let pk = k.public_key();
            let sig = k.sign(b"hello");
            assert!(pk.verify(b"hello", &sig).is_ok());
            assert_eq!(pk.verify(b"hellp", &sig), Err(CryptoError::BadSignature));
            let round: PublicKey = pk.to_text().parse().unwrap();
            assert_eq!(round, pk);
            let seeded = SigningKey::from_seed(alg, k.secret_bytes().as_ref()).unwrap();
            assert_eq!(seeded.public_key(), pk);
        }
    }

    #[test]
    fn batch_reports_the_bad_item() {
        let keys: Vec<SigningKey> = (0..100)
            .map(|i| SigningKey::from_label(SigAlg::Ed25519, &format!("k{i}")))
            .collect();
        let pks: Vec<PublicKey> = keys.iter().map(|k| k.public_key()).collect();
        let msgs: Vec<Vec<u8>> = (0..100).map(|i| format!("m{i}").into_bytes()).collect();
        let mut sigs: Vec<Signature> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        sigs[70].bytes[3] ^= 1;
        let items: Vec<VerifyItem> = (0..100)
            .map(|i| VerifyItem {
                key: &pks[i],
                msg: &msgs[i],
                sig: &sigs[i],
            })
            .collect();
        let res = verify_batch(&items);
        for (i, r) in res.iter().enumerate() {
            assert_eq!(r.is_ok(), i != 70, "item {i}");
        }
    }

    #[test]
    fn did_key_ed25519_roundtrip() {
        let k = SigningKey::from_label(SigAlg::Ed25519, "did");
        let pk = k.public_key();
        let did = pk.did();
        assert!(did.starts_with("did:key:z6Mk"), "{did}");
        assert_eq!(PublicKey::from_did(&did).unwrap(), pk);
    }
}
