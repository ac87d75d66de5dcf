//! Encrypted-at-rest keystore: a directory holding one JSON file per signing key.
//!
//! # Layout
//!
//! Each key lives in `<dir>/<label>.json`, where `label` matches
//! `^[a-z0-9][a-z0-9._-]{0,63}$`. Labels are checked before any path is built, so a label
//! can never name a file outside the keystore directory (no `/`, no `..` prefix, no
//! hidden files). On Unix the directory is created with mode `0700` and key files with
//! mode `0600`. Files are written to a hidden temporary file in the same directory,
//! flushed to disk, and then moved into place without ever replacing an existing key
//! (hard link + unlink, which fails if the target exists; on file systems without hard
//! links, an existence check followed by `rename`).
//!
//! # File format (`trellis-keystore/1`)
//!
//! ```json
//! {
//!   "format": "trellis-keystore/1",
//!   "label": "validator-1",
//!   "alg": "ed25519",
//!   "public_key": "ed25519:<hex>",
//!   "kdf": {
//!     "name": "argon2id",
//!     "m_cost_kib": 19456,
//!     "t_cost": 2,
//!     "p_cost": 1,
//!     "salt": "<16 bytes, hex>"
//!   },
//!   "cipher": {
//!     "name": "chacha20poly1305",
//!     "nonce": "<12 bytes, hex>"
//!   },
//!   "ciphertext": "<32-byte secret + 16-byte Poly1305 tag, hex>"
//! }
//! ```
//!
//! * `alg` is the [`SigAlg`] name (`ed25519` or `sm2`); `public_key` is the
//!   [`PublicKey`] text form and must use the same algorithm.
//! * The encryption key is Argon2id (version 0x13) over the UTF-8 passphrase and a fresh
//!   random 16-byte salt, with the recorded costs and a 32-byte output. The defaults are
//!   the OWASP recommendation (m = 19456 KiB, t = 2, p = 1).
//! * The plaintext is the key's 32 secret bytes ([`SigningKey::secret_bytes`]), sealed with
//!   ChaCha20-Poly1305 under a fresh random 12-byte nonce. The associated data is the UTF-8
//!   of `format + "|" + label + "|" + alg + "|" + public_key`, so a ciphertext moved into
//!   another file, relabelled, or paired with a different public key fails to decrypt.
//! * After decryption the key is rebuilt and its public key must equal `public_key`.
//!
//! Readers reject unknown fields, unknown `format`/`kdf.name`/`cipher.name` values, wrong
//! field lengths, non-canonical public-key text and KDF costs above sanity limits
//! (m ≤ 1 GiB, t ≤ 64, p ≤ 64), so a damaged file cannot make the node allocate or spin
//! without bound.
//!
//! [`Keystore::public_key`] and [`Keystore::list`] read the public key without the
//! passphrase; that value is *not* authenticated until [`Keystore::load`] succeeds.
//!
//! Secret material (passphrases, derived keys, secret key bytes) is never formatted into
//! an error or log message, and buffers holding it are zeroised after use.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{PublicKey, SigAlg, SigningKey};

/// The value of the `format` field written and accepted by this module.
pub const FORMAT: &str = "trellis-keystore/1";

const KDF_NAME: &str = "argon2id";
const CIPHER_NAME: &str = "chacha20poly1305";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const SECRET_LEN: usize = 32;
const TAG_LEN: usize = 16;
const CIPHERTEXT_LEN: usize = SECRET_LEN + TAG_LEN;
const MAX_LABEL_LEN: usize = 64;
/// Key files are a few hundred bytes; anything much larger is not one of ours.
const MAX_FILE_LEN: u64 = 16 * 1024;
/// Sanity limits on KDF costs (applied to files read and to parameters used for saving).
const MAX_M_COST_KIB: u32 = 1024 * 1024;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("keystore I/O error: {0}")]
    Io(#[from] io::Error),
    #[error(
        "invalid key label {0:?}: labels are 1-64 characters from a-z, 0-9, '.', '_' and '-', \
         starting with a letter or digit"
    )]
    BadLabel(String),
    #[error("no key labelled {0:?} in the keystore")]
    NotFound(String),
    #[error("a key labelled {0:?} already exists; refusing to overwrite it")]
    AlreadyExists(String),
    #[error("wrong passphrase, or the keystore file has been tampered with")]
    WrongPassphrase,
    #[error("corrupt keystore file: {0}")]
    Corrupt(String),
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Number of passes.
    pub t_cost: u32,
    /// Degree of parallelism (lanes).
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// OWASP's recommended Argon2id setting: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Self {
            m_cost_kib: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// Cheap Argon2id parameters (256 KiB, 1 pass) for tests and demos. Do not use for
    /// keys that protect anything.
    pub fn insecure_fast() -> Self {
        Self {
            m_cost_kib: 256,
            t_cost: 1,
            p_cost: 1,
        }
    }

    /// Check the costs against the sanity limits and argon2's own rules.
    fn to_argon2(self) -> Result<Params, String> {
        if self.m_cost_kib > MAX_M_COST_KIB {
            return Err(format!(
                "argon2id memory cost {} KiB exceeds the limit of {MAX_M_COST_KIB} KiB",
                self.m_cost_kib
            ));
        }
        if self.t_cost > MAX_T_COST {
            return Err(format!(
                "argon2id time cost {} exceeds the limit of {MAX_T_COST}",
                self.t_cost
            ));
        }
        if self.p_cost > MAX_P_COST {
            return Err(format!(
                "argon2id parallelism {} exceeds the limit of {MAX_P_COST}",
                self.p_cost
            ));
        }
        Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(SECRET_LEN))
            .map_err(|e| format!("invalid argon2id parameters: {e}"))
    }
}

/// A directory of passphrase-encrypted signing keys. See the module documentation for
/// the on-disk format.
#[derive(Debug, Clone)]
pub struct Keystore {
    dir: PathBuf,
    kdf: KdfParams,
}

impl Keystore {
    /// Open the keystore at `dir`, creating the directory (mode `0700` on Unix) if needed.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, KeystoreError> {
        let dir = dir.into();
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&dir)?;
        if !fs::metadata(&dir)?.is_dir() {
            return Err(KeystoreError::Io(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("keystore path {} is not a directory", dir.display()),
            )));
        }
        Ok(Self {
            dir,
            kdf: KdfParams::default(),
        })
    }

    /// Use `params` for keys saved from now on. Loading always uses the costs recorded in
    /// each file.
    pub fn with_kdf(mut self, params: KdfParams) -> Self {
        self.kdf = params;
        self
    }

    /// The keystore directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Encrypt `key` under `passphrase` and store it as `<label>.json`. Refuses to replace
    /// an existing key. Returns the key's public key.
    pub fn save(
        &self,
        label: &str,
        key: &SigningKey,
        passphrase: &str,
    ) -> Result<PublicKey, KeystoreError> {
        let path = self.path_for(label)?;
        let params = self
            .kdf
            .to_argon2()
            .map_err(|msg| KeystoreError::Io(io::Error::new(io::ErrorKind::InvalidInput, msg)))?;
        // Cheap early check so we don't pay for the KDF; the final move re-checks atomically.
        if entry_exists(&path) {
            return Err(KeystoreError::AlreadyExists(label.to_string()));
        }

        let alg = key.alg();
        let public_key = key.public_key();
        let salt: [u8; SALT_LEN] = random_bytes()?;
        let nonce: [u8; NONCE_LEN] = random_bytes()?;
        let enc_key = derive_key(passphrase, &salt, &params)?;
        let aad = aad(label, alg, &public_key);

        let mut sealed = key.secret_bytes();
        let tag = ChaCha20Poly1305::new(Key::from_slice(enc_key.as_ref()))
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad.as_bytes(), sealed.as_mut())
            .map_err(|_| {
                KeystoreError::Io(io::Error::other("chacha20poly1305 encryption failed"))
            })?;
        // `sealed` now holds ciphertext; it is zeroised on drop regardless.
        let mut ciphertext = Vec::with_capacity(CIPHERTEXT_LEN);
        ciphertext.extend_from_slice(sealed.as_ref());
        ciphertext.extend_from_slice(tag.as_slice());

        let file = KeyFile {
            format: FORMAT.to_string(),
            label: label.to_string(),
            alg: alg.name().to_string(),
            public_key: public_key.to_text(),
            kdf: KdfSection {
                name: KDF_NAME.to_string(),
                m_cost_kib: self.kdf.m_cost_kib,
                t_cost: self.kdf.t_cost,
                p_cost: self.kdf.p_cost,
                salt: hex::encode(salt),
            },
            cipher: CipherSection {
                name: CIPHER_NAME.to_string(),
                nonce: hex::encode(nonce),
            },
            ciphertext: hex::encode(&ciphertext),
        };
        let mut json = serde_json::to_vec_pretty(&file)
            .map_err(|e| KeystoreError::Io(io::Error::other(e.to_string())))?;
        json.push(b'\n');
        self.write_new(label, &path, &json)?;
        Ok(public_key)
    }

    /// Decrypt the key stored under `label`.
    ///
    /// Returns [`KeystoreError::WrongPassphrase`] if the passphrase is wrong or any
    /// authenticated part of the file (ciphertext, nonce, salt, costs, label, algorithm,
    /// public key) was altered.
    pub fn load(&self, label: &str, passphrase: &str) -> Result<SigningKey, KeystoreError> {
        let rec = self.read_record(label)?;
        let params = rec.kdf.to_argon2().map_err(KeystoreError::Corrupt)?;
        let enc_key = derive_key(passphrase, &rec.salt, &params)?;
        let aad = aad(label, rec.alg, &rec.public_key);

        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        secret.copy_from_slice(&rec.ciphertext[..SECRET_LEN]);
        let tag = Tag::from_slice(&rec.ciphertext[SECRET_LEN..]);
        ChaCha20Poly1305::new(Key::from_slice(enc_key.as_ref()))
            .decrypt_in_place_detached(
                Nonce::from_slice(&rec.nonce),
                aad.as_bytes(),
                secret.as_mut(),
                tag,
            )
            .map_err(|_| KeystoreError::WrongPassphrase)?;

        let key = SigningKey::from_seed(rec.alg, secret.as_ref()).map_err(|_| {
            KeystoreError::Corrupt(format!(
                "{label}: decrypted secret is not a valid {} key",
                rec.alg.name()
            ))
        })?;
        if key.public_key() != rec.public_key {
            return Err(KeystoreError::Corrupt(format!(
                "{label}: decrypted key does not match the stored public key"
            )));
        }
        Ok(key)
    }

    /// The public key stored under `label`, read without the passphrase. This value is not
    /// authenticated; [`Keystore::load`] verifies it.
    pub fn public_key(&self, label: &str) -> Result<PublicKey, KeystoreError> {
        Ok(self.read_record(label)?.public_key)
    }

    /// All keys as `(label, public_key)`, sorted by label. Files whose names are not
    /// `<valid label>.json` (including temporary files) are ignored; a key file that cannot
    /// be parsed makes the whole listing fail with [`KeystoreError::Corrupt`].
    pub fn list(&self) -> Result<Vec<(String, PublicKey)>, KeystoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(label) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if validate_label(label).is_err() {
                continue;
            }
            match fs::metadata(entry.path()) {
                Ok(m) if m.is_file() => {}
                _ => continue,
            }
            let rec = self.read_record(label)?;
            out.push((label.to_string(), rec.public_key));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Whether a key file exists under `label` (false for invalid labels).
    pub fn exists(&self, label: &str) -> bool {
        self.path_for(label).is_ok_and(|p| entry_exists(&p))
    }

    fn path_for(&self, label: &str) -> Result<PathBuf, KeystoreError> {
        validate_label(label)?;
        Ok(self.dir.join(format!("{label}.json")))
    }

    fn read_record(&self, label: &str) -> Result<Record, KeystoreError> {
        let path = self.path_for(label)?;
        let not_found = |e: io::Error| {
            if e.kind() == io::ErrorKind::NotFound {
                KeystoreError::NotFound(label.to_string())
            } else {
                KeystoreError::Io(e)
            }
        };
        // Check before opening so a FIFO or device under a key's name cannot block us.
        if !fs::metadata(&path).map_err(not_found)?.is_file() {
            return Err(KeystoreError::Corrupt(format!(
                "{label}: not a regular file"
            )));
        }
        let file = File::open(&path).map_err(not_found)?;
        if !file.metadata()?.is_file() {
            return Err(KeystoreError::Corrupt(format!(
                "{label}: not a regular file"
            )));
        }
        let mut text = String::new();
        file.take(MAX_FILE_LEN + 1)
            .read_to_string(&mut text)
            .map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData => {
                    KeystoreError::Corrupt(format!("{label}: file is not UTF-8"))
                }
                _ => KeystoreError::Io(e),
            })?;
        if text.len() as u64 > MAX_FILE_LEN {
            return Err(KeystoreError::Corrupt(format!(
                "{label}: file is larger than {MAX_FILE_LEN} bytes"
            )));
        }
        Record::parse(label, &text)
    }

    /// Write `contents` to a temporary file and move it to `path` without replacing anything.
    fn write_new(&self, label: &str, path: &Path, contents: &[u8]) -> Result<(), KeystoreError> {
        let suffix: [u8; 8] = random_bytes()?;
        // Leading '.' and trailing ".tmp": never a valid `<label>.json` name.
        let tmp_path = self
            .dir
            .join(format!(".{label}.{}.tmp", hex::encode(suffix)));

        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp_path)?;
        // Only now is the temporary name ours to remove.
        let tmp = TempFile(tmp_path);
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);

        match fs::hard_link(&tmp.0, path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(KeystoreError::AlreadyExists(label.to_string()));
            }
            Err(_) => {
                // File system without hard links: fall back to check + rename.
                if entry_exists(path) {
                    return Err(KeystoreError::AlreadyExists(label.to_string()));
                }
                fs::rename(&tmp.0, path)?;
            }
        }
        drop(tmp); // removes the temporary name if it is still there
        sync_dir(&self.dir);
        Ok(())
    }
}

/// Check a label against `^[a-z0-9][a-z0-9._-]{0,63}$`.
fn validate_label(label: &str) -> Result<(), KeystoreError> {
    let bytes = label.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_LABEL_LEN
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(KeystoreError::BadLabel(label.to_string()))
    }
}

fn parse_alg(name: &str) -> Option<SigAlg> {
    match name {
        "ed25519" => Some(SigAlg::Ed25519),
        "sm2" => Some(SigAlg::Sm2),
        _ => None,
    }
}

fn aad(label: &str, alg: SigAlg, public_key: &PublicKey) -> String {
    format!("{FORMAT}|{label}|{}|{}", alg.name(), public_key.to_text())
}

fn entry_exists(path: &Path) -> bool {
    // symlink_metadata: a dangling symlink also occupies the name.
    fs::symlink_metadata(path).is_ok()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], KeystoreError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| {
        KeystoreError::Io(io::Error::other(format!(
            "operating system random number generator failed: {e}"
        )))
    })?;
    Ok(out)
}

/// Argon2id(passphrase, salt) -> 32-byte key. The working memory is zeroised afterwards.
fn derive_key(
    passphrase: &str,
    salt: &[u8],
    params: &Params,
) -> Result<Zeroizing<[u8; SECRET_LEN]>, KeystoreError> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = Zeroizing::new([0u8; SECRET_LEN]);
    let mut blocks = vec![Block::default(); params.block_count()];
    let res = argon.hash_password_into_with_memory(
        passphrase.as_bytes(),
        salt,
        out.as_mut(),
        &mut blocks,
    );
    for b in blocks.iter_mut() {
        AsMut::<[u64]>::as_mut(b).zeroize();
    }
    res.map_err(|e| {
        KeystoreError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("argon2id key derivation failed: {e}"),
        ))
    })?;
    Ok(out)
}

/// Best-effort fsync of the directory so the new name survives a crash.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Removes the temporary file on drop (after a hard link, or on any error path).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: String,
    label: String,
    alg: String,
    public_key: String,
    kdf: KdfSection,
    cipher: CipherSection,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfSection {
    name: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CipherSection {
    name: String,
    nonce: String,
}

/// A key file after structural validation (nothing here is secret).
struct Record {
    alg: SigAlg,
    public_key: PublicKey,
    kdf: KdfParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
    ciphertext: [u8; CIPHERTEXT_LEN],
}

impl Record {
    fn parse(label: &str, text: &str) -> Result<Self, KeystoreError> {
        let corrupt = |msg: String| KeystoreError::Corrupt(format!("{label}: {msg}"));
        let f: KeyFile =
            serde_json::from_str(text).map_err(|e| corrupt(format!("malformed JSON: {e}")))?;
        if f.format != FORMAT {
            return Err(corrupt(format!(
                "unsupported format {:?} (expected {FORMAT:?})",
                f.format
            )));
        }
        if f.label != label {
            return Err(corrupt(format!(
                "file records label {:?}; was it copied or renamed?",
                f.label
            )));
        }
        let alg =
            parse_alg(&f.alg).ok_or_else(|| corrupt(format!("unknown algorithm {:?}", f.alg)))?;
        let public_key: PublicKey = f
            .public_key
            .parse()
            .map_err(|e| corrupt(format!("bad public_key: {e}")))?;
        if public_key.alg() != alg {
            return Err(corrupt(format!(
                "public_key is {} but alg is {}",
                public_key.alg().name(),
                alg.name()
            )));
        }
        if public_key.to_text() != f.public_key {
            return Err(corrupt(
                "public_key is not in canonical `<alg>:<lowercase hex>` form".into(),
            ));
        }
        if f.kdf.name != KDF_NAME {
            return Err(corrupt(format!("unsupported kdf {:?}", f.kdf.name)));
        }
        let kdf = KdfParams {
            m_cost_kib: f.kdf.m_cost_kib,
            t_cost: f.kdf.t_cost,
            p_cost: f.kdf.p_cost,
        };
        kdf.to_argon2().map_err(corrupt)?;
        if f.cipher.name != CIPHER_NAME {
            return Err(corrupt(format!("unsupported cipher {:?}", f.cipher.name)));
        }
        Ok(Self {
            alg,
            public_key,
            kdf,
            salt: decode_fixed(&f.kdf.salt, "kdf.salt").map_err(corrupt)?,
            nonce: decode_fixed(&f.cipher.nonce, "cipher.nonce").map_err(corrupt)?,
            ciphertext: decode_fixed(&f.ciphertext, "ciphertext").map_err(corrupt)?,
        })
    }
}

fn decode_fixed<const N: usize>(hex_str: &str, field: &str) -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    hex::decode_to_slice(hex_str, &mut out)
        .map_err(|e| format!("{field} must be {N} bytes of hex: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASS: &str = "correct horse battery staple";

    fn store(dir: &Path) -> Keystore {
        Keystore::open(dir)
            .unwrap()
            .with_kdf(KdfParams::insecure_fast())
    }

    fn file_of(ks: &Keystore, label: &str) -> PathBuf {
        ks.dir().join(format!("{label}.json"))
    }

    fn read_json(ks: &Keystore, label: &str) -> serde_json::Value {
        serde_json::from_slice(&fs::read(file_of(ks, label)).unwrap()).unwrap()
    }

    fn write_json(ks: &Keystore, label: &str, v: &serde_json::Value) {
        fs::write(file_of(ks, label), serde_json::to_vec_pretty(v).unwrap()).unwrap();
    }

    /// Change one hex digit of `s` at position `i`.
    fn flip_hex(s: &str, i: usize) -> String {
        let mut b = s.as_bytes().to_vec();
        b[i] = if b[i] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).unwrap()
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn round_trip_both_algorithms() {
        let tmp = tempfile::tempdir().unwrap();
        let ks = store(tmp.path());
        for (label, alg) in [("node-ed", SigAlg::Ed25519), ("node-sm2", SigAlg::Sm2)] {
            let key = SigningKey::generate(alg);
            let pk = ks.save(label, &key, PASS).unwrap();
            assert_eq!(pk, key.public_key());
            assert!(ks.exists(label));
            assert_eq!(ks.public_key(label).unwrap(), pk);

            let loaded = ks.load(label, PASS).unwrap();
            assert_eq!(loaded.alg(), alg);
            assert_eq!(loaded.public_key(), pk);
            assert_eq!(*loaded.secret_bytes(), *key.secret_bytes());
            let sig = loaded.sign(b"msg");
            pk.verify(b"msg", &sig).unwrap();

            let v = read_json(&ks, label);
            assert_eq!(v["format"], FORMAT);
            assert_eq!(v["label"], label);
            assert_eq!(v["alg"], alg.name());
            assert_eq!(v["public_key"], pk.to_text());
            assert_eq!(v["kdf"]["name"], "argon2id");
            assert_eq!(v["kdf"]["m_cost_kib"], 256);
            assert_eq!(v["kdf"]["t_cost"], 1);
            assert_eq!(v["kdf"]["p_cost"], 1);
            assert_eq!(v["kdf"]["salt"].as_str().unwrap().len(), 2 * SALT_LEN);
            assert_eq!(v["cipher"]["name"], "chacha20poly1305");
            assert_eq!(v["cipher"]["nonce"].as_str().unwrap().len(), 2 * NONCE_LEN);
            assert_eq!(v["ciphertext"].as_str().unwrap().len(), 2 * CIPHERTEXT_LEN);
        }
    }

    #[test]
    fn secret_never_appears_in_file() {
        let tmp = tempfile::tempdir().unwrap();
        let ks = store(tmp.path());
        for (label, alg) in [("a", SigAlg::Ed25519), ("b", SigAlg::Sm2)] {
            let key = SigningKey::generate(alg);
            ks.save(label, &key, PASS).unwrap();
            let raw = fs::read(file_of(&ks, label)).unwrap();
            let secret = key.secret_bytes();
            assert!(!contains(&raw, secret.as_ref()), "raw secret in file");
            let lower = hex::encode(secret.as_ref());
            let upper = hex::encode_upper(secret.as_ref());
            assert!(!contains(&raw, lower.as_bytes()), "hex secret in file");
            assert!(!contains(&raw, upper.as_bytes()), "hex secret in file");
            // Nor any 8-byte run of it.
            for w in secret.windows(8) {
                assert!(!contains(&raw, hex::encode(w).as_bytes()));
            }
        }
    }

    #[test]
    fn fresh_salt_and_nonce_per_file() {
        let tmp = tempfile::tempdir().unwrap();
        let ks = store(tmp.path());
        let key = SigningKey::from_label(SigAlg::Ed25519, "same");
        ks.save("one", &key, PASS).unwrap();
        ks.save("two", &key, PASS).unwrap();
        let (a, b) = (read_json(&ks, "one"), read_json(&ks, "two"));
        assert_ne!(a["kdf"]["salt"], b["kdf"]["salt"]);
        assert_ne!(a["cipher"]["nonce"], b["cipher"]["nonce"]);
        assert_ne!(a["ciphertext"], b["ciphertext"]);
    }

    #[test]
    fn wrong_passphrase() {
        let tmp = tempfile::tempdir().unwrap();
        let ks = store(tmp.path());
        let key = SigningKey::generate(SigAlg::Ed25519);
        ks.save("k", &key, PASS).unwrap();
        assert!(matches!(
            ks.load("k", "Correct horse battery staple"),
            Err(KeystoreError::WrongPassphrase)
        ));
        assert!(matches!(
            ks.load("k", ""),
            Err(KeystoreError::WrongPassphrase)
        ));
        // The correct one still works afterwards.
        ks.load("k", PASS).unwrap();
    }

    #[test]
    fn tampering_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let ks = store(tmp.path());
        let key = SigningKey::generate(SigAlg::Sm2);
        ks.save("k", &key, PASS).unwrap();
        let orig = read_json(&ks, "k");

        type Tamper = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Tamper)> = vec![
            (
                "ciphertext byte",
                Box::new(|v| {
                    let s = flip_hex(v["ciphertext"].as_str().unwrap(), 5);
                    v["ciphertext"] = s.into();
                }),
            ),
            (
                "tag byte",
                Box::new(|v| {
                    let s = flip_hex(v["ciphertext"].as_str().unwrap(), 90);
                    v["ciphertext"] = s.into();
                }),
            ),
            (
                "nonce",
                Box::new(|v| {
                    let s = flip_hex(v["cipher"]["nonce"].as_str().unwrap(), 0);
                    v["cipher"]["nonce"] = s.into();
                }),
            ),
            (
                "salt",
                Box::new(|v| {
                    let s = flip_hex(v["kdf"]["salt"].as_str().unwrap(), 3);
                    v["kdf"]["salt"] = s.into();
                }),
            ),
            ("t_cost", Box::new(|v| v["kdf"]["t_cost"] = 2.into())),
        ];
        for (what, tamper) in cases {
            let mut v = orig.clone();
            tamper(&mut v);
            write_json(&ks, "k", &v);
            assert!(
                matches!(ks.load("k", PASS), Err(KeystoreError::WrongPassphrase)),
                "tampered {what} not detected"
            );
        }
        write_json(&ks, "k", &orig);
        assert_eq!(ks.load("k", PASS).unwrap().public_key(), key.public_key());
    }

    #[test]
    fn swapped_public_key_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let ks = store(tmp.path());
        let key = SigningKey::generate(SigAlg::Ed25519);
        ks.save("k", &key, PASS).unwrap();
        let other = SigningKey::generate(SigAlg::Ed25519).public_key();
        let mut v = read_json(&ks, "k");
        v["public_key"] = other.to_text().into();
        write_json(&ks, "k", &v);
        // Readable without the passphrase (unauthenticated)...
        assert_eq!(ks.public_key("k").unwrap(), other);
        // ...but load refuses it.
        assert!(matches!(
            ks.load("k", PASS),
            Err(KeystoreError::WrongPassphrase)
        ));

        // Swapping to a key of the other algorithm is caught structurally.
        let sm2 = SigningKey::generate(SigAlg::Sm2).public_key();
        v["public_key"] = sm2.to_text().into();
        write_json(&ks, "k", &v);
        assert!(matches!(ks.load("k", PASS), Err(KeystoreError::Corrupt(_))));
        // And changing alg to match makes the AAD differ.
        v["alg"] = "sm2".into();
        write_json(&ks, "k", &v);
        assert!(matches!(
            ks.load("k", PASS),
            Err(KeystoreError::WrongPassphrase)
        ));
    }

    #[test]
    fn file_copied_under_another_label_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let ks = store(tmp.path());
        let key = SigningKey::generate(SigAlg::Ed25519);
        ks.save("alice", &key, PASS).unwrap();
        fs::copy(file_of(&ks, "alice"), file_of(&ks, "bob")).unwrap();
        assert!(matches!(
            ks.load("bob", PASS),
            Err(KeystoreError::Corrupt(_))
        ));
        assert!(matches!(
            ks.public_key("bob"),
            Err(KeystoreError::Corrupt(_))
        ));

        // Editing the label field to match the new name breaks the AAD instead.
        let mut v = read_json(&ks, "bob");
        v["label"] = "bob".into();
        write_json(&ks, "bob", &v);
        assert!(matches!(
            ks.load("bob", PASS),
            Err(KeystoreError::WrongPassphrase)
        ));
        ks.load("alice", PASS).unwrap();
    }

    #[test]
    fn bad_labels_are_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("ks");
        let ks = store(&root);
        let key = SigningKey::generate(SigAlg::Ed25519);
        let long = "a".repeat(65);
        for bad in [
            "",
            "../x",
            "..",
            ".",
            "A",
            "Key",
            "a/b",
            "a\\b",
            "/abs",
            ".hidden",
            "-a",
            "_a",
            "a b",
            "é",
            "a\0b",
            "a:b",
            long.as_str(),
        ] {
            assert!(
                matches!(ks.save(bad, &key, PASS), Err(KeystoreError::BadLabel(_))),
                "save accepted {bad:?}"
            );
            assert!(matches!(
                ks.load(bad, PASS),
                Err(KeystoreError::BadLabel(_))
            ));
            assert!(matches!(
                ks.public_key(bad),
                Err(KeystoreError::BadLabel(_))
            ));
            assert!(!ks.exists(bad));
        }
        // Nothing was written anywhere.
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);

        let max = "z".repeat(64);
        for good in ["a", "0", "node-1.key_2", "a..b", max.as_str()] {
            ks.save(good, &key, PASS).unwrap();
            assert!(ks.exists(good));
        }
        let msg = KeystoreError::BadLabel("../x".into()).to_string();
        assert!(msg.contains("../x"), "{msg}");
    }

    #[test]
    fn list_is_sorted_and_ignores_other_files() {
        let tmp = tempfile::tempdir().unwrap();
        let ks = store(tmp.path());
        assert!(ks.list().unwrap().is_empty());
        let mut expected = Vec::new();
        for (label, alg) in [
            ("zeta", SigAlg::Ed25519),
            ("alpha", SigAlg::Sm2),
            ("mid.1", SigAlg::Ed25519),
            ("0-first", SigAlg::Sm2),
        ] {
            let pk = ks.save(label, &SigningKey::generate(alg), PASS).unwrap();
            expected.push((label.to_string(), pk));
        }
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        fs::write(tmp.path().join("README.txt"), "not a key").unwrap();
        fs::write(tmp.path().join(".alpha.0011.tmp"), "partial").unwrap();
        fs::write(tmp.path().join("Upper.json"), "{}").unwrap();
        fs::create_dir(tmp.path().join("sub.json")).unwrap();
        let got = ks.list().unwrap();
        assert_eq!(got, expected);
        let labels: Vec<&str> = got.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, ["0-first", "alpha", "mid.1", "zeta"]);
    }

    #[test]
    fn save_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let ks = store(tmp.path());
        let first = SigningKey::generate(SigAlg::Ed25519);
        let second = SigningKey::generate(SigAlg::Ed25519);
        ks.save("k", &first, PASS).unwrap();
        let before = fs::read(file_of(&ks, "k")).unwrap();
        assert!(matches!(
            ks.save("k", &second, "other"),
            Err(KeystoreError::AlreadyExists(l)) if l == "k"
        ));
        assert_eq!(fs::read(file_of(&ks, "k")).unwrap(), before);
        assert_eq!(ks.load("k", PASS).unwrap().public_key(), first.public_key());
        // No temporary files left behind.
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_and_corrupt_files() {
        let tmp = tempfile::tempdir().unwrap();
        let ks = store(tmp.path());
        assert!(matches!(
            ks.load("nope", PASS),
            Err(KeystoreError::NotFound(_))
        ));
        assert!(matches!(
            ks.public_key("nope"),
            Err(KeystoreError::NotFound(_))
        ));
        assert!(!ks.exists("nope"));

        let key = SigningKey::from_label(SigAlg::Ed25519, "corrupt");
        ks.save("k", &key, PASS).unwrap();
        let orig = read_json(&ks, "k");
        let pk_text = key.public_key().to_text();
        let pk_upper = format!("ed25519:{}", hex::encode_upper(key.public_key().as_bytes()));
        assert_ne!(pk_text, pk_upper);
        let corruptions: Vec<(&str, serde_json::Value)> = vec![
            ("format", {
                let mut v = orig.clone();
                v["format"] = "trellis-keystore/2".into();
                v
            }),
            ("alg", {
                let mut v = orig.clone();
                v["alg"] = "rsa".into();
                v
            }),
            ("kdf name", {
                let mut v = orig.clone();
                v["kdf"]["name"] = "scrypt".into();
                v
            }),
            ("huge m_cost", {
                let mut v = orig.clone();
                v["kdf"]["m_cost_kib"] = u32::MAX.into();
                v
            }),
            ("zero t_cost", {
                let mut v = orig.clone();
                v["kdf"]["t_cost"] = 0.into();
                v
            }),
            ("cipher name", {
                let mut v = orig.clone();
                v["cipher"]["name"] = "aes-gcm".into();
                v
            }),
            ("short salt", {
                let mut v = orig.clone();
                v["kdf"]["salt"] = "00".into();
                v
            }),
            ("short ciphertext", {
                let mut v = orig.clone();
                v["ciphertext"] = "abcd".into();
                v
            }),
            ("bad hex", {
                let mut v = orig.clone();
                v["cipher"]["nonce"] = "zz".repeat(NONCE_LEN).into();
                v
            }),
            ("uppercase pk", {
                let mut v = orig.clone();
                v["public_key"] = pk_upper.clone().into();
                v
            }),
            ("extra field", {
                let mut v = orig.clone();
                v["secret"] = "x".into();
                v
            }),
            ("missing field", {
                let mut v = orig.clone();
                v.as_object_mut().unwrap().remove("ciphertext");
                v
            }),
        ];
        for (what, v) in corruptions {
            write_json(&ks, "k", &v);
            let err = ks.load("k", PASS);
            assert!(
                matches!(err, Err(KeystoreError::Corrupt(_))),
                "{what}: {:?}",
                err.map(|k| k.public_key())
            );
        }
        fs::create_dir(file_of(&ks, "dir")).unwrap();
        assert!(matches!(
            ks.load("dir", PASS),
            Err(KeystoreError::Corrupt(_))
        ));
        fs::remove_dir(file_of(&ks, "dir")).unwrap();
        fs::write(file_of(&ks, "k"), b"\xff\xfe not json").unwrap();
        assert!(matches!(ks.load("k", PASS), Err(KeystoreError::Corrupt(_))));
        assert!(matches!(ks.list(), Err(KeystoreError::Corrupt(_))));
        fs::write(file_of(&ks, "k"), vec![b' '; (MAX_FILE_LEN + 10) as usize]).unwrap();
        assert!(matches!(ks.load("k", PASS), Err(KeystoreError::Corrupt(_))));
    }

    #[test]
    fn invalid_kdf_params_are_refused_on_save() {
        let tmp = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(SigAlg::Ed25519);
        for p in [
            KdfParams {
                m_cost_kib: 1,
                t_cost: 1,
                p_cost: 1,
            },
            KdfParams {
                m_cost_kib: 256,
                t_cost: 0,
                p_cost: 1,
            },
            KdfParams {
                m_cost_kib: MAX_M_COST_KIB + 1,
                t_cost: 1,
                p_cost: 1,
            },
        ] {
            let ks = Keystore::open(tmp.path()).unwrap().with_kdf(p);
            assert!(matches!(
                ks.save("k", &key, PASS),
                Err(KeystoreError::Io(_))
            ));
            assert!(!ks.exists("k"));
        }
    }

    #[test]
    fn default_params_are_owasp_and_work() {
        assert_eq!(
            KdfParams::default(),
            KdfParams {
                m_cost_kib: 19456,
                t_cost: 2,
                p_cost: 1
            }
        );
        let tmp = tempfile::tempdir().unwrap();
        let ks = Keystore::open(tmp.path()).unwrap();
        let key = SigningKey::generate(SigAlg::Ed25519);
        ks.save("k", &key, PASS).unwrap();
        let v = read_json(&ks, "k");
        assert_eq!(v["kdf"]["m_cost_kib"], 19456);
        assert_eq!(v["kdf"]["t_cost"], 2);
        // Loading uses the recorded costs, whatever this handle's setting.
        let fast = Keystore::open(tmp.path())
            .unwrap()
            .with_kdf(KdfParams::insecure_fast());
        assert_eq!(fast.load("k", PASS).unwrap().public_key(), key.public_key());
    }

    #[test]
    fn errors_do_not_leak_secrets() {
        let tmp = tempfile::tempdir().unwrap();
        let ks = store(tmp.path());
        let key = SigningKey::generate(SigAlg::Sm2);
        ks.save("k", &key, PASS).unwrap();
        let secret_hex = hex::encode(key.secret_bytes().as_ref());
        let err = ks.load("k", "wrong").map(|_| ()).unwrap_err();
        for text in [err.to_string(), format!("{err:?}"), format!("{ks:?}")] {
            assert!(!text.contains(&secret_hex));
            assert!(!text.contains(PASS));
        }
    }

    #[cfg(unix)]
    #[test]
    fn unix_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested").join("keys");
        let ks = store(&dir);
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        ks.save("k", &SigningKey::generate(SigAlg::Ed25519), PASS)
            .unwrap();
        let mode = fs::metadata(file_of(&ks, "k"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
}
