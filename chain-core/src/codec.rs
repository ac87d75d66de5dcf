//! The canonical binary encoding (docs/spec/encoding.md): big-endian integers, u32 length
//! prefixes, no optional padding, so every value has exactly one encoding. Decoding is strict:
//! trailing bytes, truncation and over-long lengths are errors.

use crate::crypto::{CryptoError, Digest, HashAlg, PublicKey, SigAlg, Signature};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unexpected end of input while reading {0}")]
    Truncated(&'static str),
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    #[error("length {len} of {what} exceeds the limit {limit}")]
    TooLong {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("invalid UTF-8 in {0}")]
    Utf8(&'static str),
    #[error("unsupported version {0}")]
    Version(u8),
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Upper bound for any single length-prefixed field; real limits are enforced by callers.
const MAX_FIELD: usize = 16 * 1024 * 1024;

#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    pub fn digest(&mut self, d: &Digest) -> &mut Self {
        self.u8(d.alg.id());
        self.raw(&d.bytes)
    }
    pub fn public_key(&mut self, k: &PublicKey) -> &mut Self {
        self.u8(k.alg().id());
        self.bytes(k.as_bytes())
    }
    pub fn signature(&mut self, s: &Signature) -> &mut Self {
        self.u8(s.alg.id());
        self.bytes(&s.bytes)
    }
    pub fn list<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Self, &T)) -> &mut Self {
        self.u32(items.len() as u32);
        for it in items {
            f(self, it);
        }
        self
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(DecodeError::Truncated(what))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    pub fn bytes_limited(
        &mut self,
        what: &'static str,
        limit: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)? as usize;
        if len > limit {
            return Err(DecodeError::TooLong { what, len, limit });
        }
        self.take(len, what)
    }
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        self.bytes_limited(what, MAX_FIELD)
    }
    pub fn str_limited(
        &mut self,
        what: &'static str,
        limit: usize,
    ) -> Result<&'a str, DecodeError> {
        let b = self.bytes_limited(what, limit)?;
        std::str::from_utf8(b).map_err(|_| DecodeError::Utf8(what))
    }
    pub fn str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        self.str_limited(what, MAX_FIELD)
    }
    pub fn digest(&mut self, what: &'static str) -> Result<Digest, DecodeError> {
        let alg = HashAlg::from_id(self.u8(what)?)?;
        let b = self.take(32, what)?;
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(b);
        Ok(Digest { alg, bytes })
    }
    pub fn public_key(&mut self, what: &'static str) -> Result<PublicKey, DecodeError> {
        let alg = SigAlg::from_id(self.u8(what)?)?;
        let b = self.bytes_limited(what, 128)?;
        Ok(PublicKey::from_bytes(alg, b)?)
    }
    pub fn signature(&mut self, what: &'static str) -> Result<Signature, DecodeError> {
        let alg = SigAlg::from_id(self.u8(what)?)?;
        let b = self.bytes_limited(what, 128)?;
        Ok(Signature::new(alg, b.to_vec())?)
    }
    /// Read a list whose count is bounded by `limit` (so a forged count cannot make us allocate).
    pub fn list<T>(
        &mut self,
        what: &'static str,
        limit: usize,
        mut f: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let n = self.u32(what)? as usize;
        if n > limit {
            return Err(DecodeError::TooLong {
                what,
                len: n,
                limit,
            });
        }
        let mut out = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            out.push(f(self)?);
        }
        Ok(out)
    }
    pub fn finish(self) -> Result<(), DecodeError> {
        let rest = self.data.len() - self.pos;
        if rest != 0 {
            return Err(DecodeError::Trailing(rest));
        }
        Ok(())
    }
}
