#!/usr/bin/env python3
"""Trellis interop check, written from docs/spec/encoding.md alone.

Builds and signs a `notary.anchor` transaction, submits it to a running node,
fetches its proof bundle and verifies the bundle independently (header,
commit certificate, validator set from genesis.json, RFC 9162 inclusion paths,
receipt).  It then corrupts the bundle in several places and requires each
corrupted copy to be rejected.

Usage:
    python3 tests/interop/interop.py --node http://127.0.0.1:PORT \
        --seed-hex <64 hex: Ed25519 seed of a registered member> --genesis genesis.json
    python3 tests/interop/interop.py --self-test

Needs Python 3.11+ and the `cryptography` package.  Only the ed25519-sha256
suite is supported.  Section numbers (§) refer to docs/spec/encoding.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from typing import Callable, TypeVar

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
except ImportError:  # pragma: no cover
    sys.stderr.write("interop: the 'cryptography' package is required (pip install cryptography)\n")
    sys.exit(1)

T = TypeVar("T")


class SpecError(Exception):
    """Malformed input or a failed verification step."""


def require(cond: bool, msg: str) -> None:
    if not cond:
        raise SpecError(msg)


# ---------------------------------------------------------------------------
# §4 Algorithms and suites
# ---------------------------------------------------------------------------

SIG_ED25519 = 1
SIG_SM2 = 2
HASH_SHA256 = 1
HASH_SM3 = 2

SIG_KEY_LEN = {SIG_ED25519: 32, SIG_SM2: 65}
SIG_LEN = {SIG_ED25519: 64, SIG_SM2: 64}
HASH_IDS = {HASH_SHA256, HASH_SM3}

SUITES = {"ed25519-sha256": (SIG_ED25519, HASH_SHA256), "sm2-sm3": (SIG_SM2, HASH_SM3)}
SUPPORTED_SUITE = "ed25519-sha256"
SUITE_SIG, SUITE_HASH = SUITES[SUPPORTED_SUITE]


def H(data: bytes) -> bytes:
    """The suite hash (SHA-256 for ed25519-sha256)."""
    return hashlib.sha256(data).digest()


# ---------------------------------------------------------------------------
# §5 Domain tags
# ---------------------------------------------------------------------------

TAG_TX = b"trellis/tx/v1\x00"
TAG_PRECOMMIT = b"trellis/precommit/v1\x00"


# ---------------------------------------------------------------------------
# §3 Primitive encodings: writer (encoder) and reader (strict decoder)
# ---------------------------------------------------------------------------

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1


@dataclass(frozen=True)
class Digest:
    alg: int
    value: bytes  # exactly 32 bytes


@dataclass(frozen=True)
class PublicKey:
    alg: int
    key: bytes

    def text(self) -> str:
        """§10 text form: 'ed25519:<hex>' / 'sm2:<hex>'."""
        prefix = {SIG_ED25519: "ed25519", SIG_SM2: "sm2"}[self.alg]
        return f"{prefix}:{self.key.hex()}"


@dataclass(frozen=True)
class Signature:
    alg: int
    sig: bytes


class Writer:
    def __init__(self) -> None:
        self.buf = bytearray()

    def u8(self, v: int) -> "Writer":
        require(0 <= v <= 0xFF, "u8 out of range")
        self.buf.append(v)
        return self

    def u32(self, v: int) -> "Writer":
        require(0 <= v <= U32_MAX, "u32 out of range")
        self.buf += v.to_bytes(4, "big")
        return self

    def u64(self, v: int) -> "Writer":
        require(0 <= v <= U64_MAX, "u64 out of range")
        self.buf += v.to_bytes(8, "big")
        return self

    def bytes_(self, b: bytes) -> "Writer":
        self.u32(len(b))
        self.buf += b
        return self

    def string(self, s: str) -> "Writer":
        return self.bytes_(s.encode("utf-8"))

    def list_(self, items: list[T], item: Callable[["Writer", T], object]) -> "Writer":
        self.u32(len(items))
        for it in items:
            item(self, it)
        return self

    def option(self, value: T | None, item: Callable[["Writer", T], object]) -> "Writer":
        if value is None:
            return self.u8(0)
        self.u8(1)
        item(self, value)
        return self

    def digest(self, d: Digest) -> "Writer":
        require(d.alg in HASH_IDS and len(d.value) == 32, "bad digest")
        self.u8(d.alg)
        self.buf += d.value
        return self

    def public_key(self, pk: PublicKey) -> "Writer":
        require(SIG_KEY_LEN.get(pk.alg) == len(pk.key), "bad public key")
        return self.u8(pk.alg).bytes_(pk.key)

    def signature(self, s: Signature) -> "Writer":
        require(SIG_LEN.get(s.alg) == len(s.sig), "bad signature")
        return self.u8(s.alg).bytes_(s.sig)

    def done(self) -> bytes:
        return bytes(self.buf)


class Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.what = what

    def fail(self, msg: str) -> SpecError:
        return SpecError(f"{self.what}: {msg} at offset {self.pos}")

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise self.fail(f"truncated (need {n} bytes)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def bytes_(self) -> bytes:
        return self.take(self.u32())

    def string(self) -> str:
        raw = self.bytes_()
        try:
            return raw.decode("utf-8")  # strict: rejects invalid UTF-8
        except UnicodeDecodeError:
            raise self.fail("string is not valid UTF-8") from None

    def list_(self, item: Callable[["Reader"], T]) -> list[T]:
        n = self.u32()
        # Every item encodes to at least one byte; reject absurd counts early.
        if n > len(self.data) - self.pos:
            raise self.fail(f"list count {n} exceeds remaining input")
        return [item(self) for _ in range(n)]

    def option(self, item: Callable[["Reader"], T]) -> T | None:
        tag = self.u8()
        if tag == 0:
            return None
        if tag == 1:
            return item(self)
        raise self.fail(f"option tag {tag} is not 0 or 1")

    def digest(self) -> Digest:
        alg = self.u8()
        if alg not in HASH_IDS:
            raise self.fail(f"unknown hash algorithm id {alg}")
        return Digest(alg, self.take(32))

    def public_key(self) -> PublicKey:
        alg = self.u8()
        if alg not in SIG_KEY_LEN:
            raise self.fail(f"unknown signature algorithm id {alg}")
        key = self.bytes_()
        if len(key) != SIG_KEY_LEN[alg] or (alg == SIG_SM2 and key[0] != 0x04):
            raise self.fail(f"bad public key for algorithm {alg}")
        return PublicKey(alg, key)

    def signature(self) -> Signature:
        alg = self.u8()
        if alg not in SIG_LEN:
            raise self.fail(f"unknown signature algorithm id {alg}")
        sig = self.bytes_()
        if len(sig) != SIG_LEN[alg]:
            raise self.fail(f"bad signature length {len(sig)} for algorithm {alg}")
        return Signature(alg, sig)

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} trailing bytes")


# ---------------------------------------------------------------------------
# §6 Structures: encoders and decoders
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TxBody:
    chain_id: str
    sender: PublicKey
    nonce: int
    expiry_ms: int
    contract: str
    method: str
    args: bytes
    version: int = 1


def encode_tx_body(b: TxBody) -> bytes:
    return (
        Writer()
        .u8(b.version)
        .string(b.chain_id)
        .public_key(b.sender)
        .u64(b.nonce)
        .u64(b.expiry_ms)
        .string(b.contract)
        .string(b.method)
        .bytes_(b.args)
        .done()
    )


def decode_tx_body(data: bytes) -> TxBody:
    r = Reader(data, "TxBody")
    version = r.u8()
    if version != 1:
        raise r.fail(f"unsupported version {version}")
    b = TxBody(
        chain_id=r.string(),
        sender=r.public_key(),
        nonce=r.u64(),
        expiry_ms=r.u64(),
        contract=r.string(),
        method=r.string(),
        args=r.bytes_(),
        version=version,
    )
    r.finish()
    return b


@dataclass(frozen=True)
class SignedTx:
    body: bytes  # TxBody encoding
    signature: Signature


def encode_signed_tx(t: SignedTx) -> bytes:
    return Writer().bytes_(t.body).signature(t.signature).done()


def decode_signed_tx(data: bytes) -> SignedTx:
    r = Reader(data, "SignedTx")
    t = SignedTx(body=r.bytes_(), signature=r.signature())
    r.finish()
    return t


@dataclass(frozen=True)
class BlockHeader:
    chain_id: str
    height: int
    time_ms: int
    tx_count: int
    prev_hash: Digest
    tx_root: Digest
    receipt_root: Digest
    state_root: Digest
    validator_set_hash: Digest
    proposer: PublicKey
    version: int = 1


def encode_header(h: BlockHeader) -> bytes:
    return (
        Writer()
        .u8(h.version)
        .string(h.chain_id)
        .u64(h.height)
        .u64(h.time_ms)
        .u32(h.tx_count)
        .digest(h.prev_hash)
        .digest(h.tx_root)
        .digest(h.receipt_root)
        .digest(h.state_root)
        .digest(h.validator_set_hash)
        .public_key(h.proposer)
        .done()
    )


def decode_header(data: bytes) -> BlockHeader:
    r = Reader(data, "BlockHeader")
    version = r.u8()
    if version != 1:
        raise r.fail(f"unsupported version {version}")
    h = BlockHeader(
        chain_id=r.string(),
        height=r.u64(),
        time_ms=r.u64(),
        tx_count=r.u32(),
        prev_hash=r.digest(),
        tx_root=r.digest(),
        receipt_root=r.digest(),
        state_root=r.digest(),
        validator_set_hash=r.digest(),
        proposer=r.public_key(),
        version=version,
    )
    r.finish()
    return h


@dataclass(frozen=True)
class Validator:
    public_key: PublicKey
    power: int


def validator_sort_key(v: Validator) -> tuple[int, bytes]:
    return (v.public_key.alg, v.public_key.key)


def encode_validator_set(vs: list[Validator]) -> bytes:
    """Encodes the set in canonical order (sorted by (alg id, key bytes))."""
    ordered = sorted(vs, key=validator_sort_key)
    for a, b in zip(ordered, ordered[1:]):
        require(validator_sort_key(a) != validator_sort_key(b), "duplicate validator key")
    return Writer().list_(ordered, lambda w, v: w.public_key(v.public_key).u64(v.power)).done()


def decode_validator_set(data: bytes) -> list[Validator]:
    r = Reader(data, "ValidatorSet")
    vs = r.list_(lambda rr: Validator(rr.public_key(), rr.u64()))
    r.finish()
    for a, b in zip(vs, vs[1:]):
        require(
            validator_sort_key(a) < validator_sort_key(b),
            "ValidatorSet is not in strictly ascending (alg id, key bytes) order",
        )
    return vs


@dataclass(frozen=True)
class CommitSig:
    validator_index: int
    signature: Signature


@dataclass(frozen=True)
class CommitCertificate:
    height: int
    round: int
    block_hash: Digest
    signatures: list[CommitSig] = field(default_factory=list)


def encode_commit(c: CommitCertificate) -> bytes:
    return (
        Writer()
        .u64(c.height)
        .u32(c.round)
        .digest(c.block_hash)
        .list_(c.signatures, lambda w, s: w.u32(s.validator_index).signature(s.signature))
        .done()
    )


def decode_commit(data: bytes) -> CommitCertificate:
    r = Reader(data, "CommitCertificate")
    c = CommitCertificate(
        height=r.u64(),
        round=r.u32(),
        block_hash=r.digest(),
        signatures=r.list_(lambda rr: CommitSig(rr.u32(), rr.signature())),
    )
    r.finish()
    return c


def precommit_message(chain_id: str, height: int, round_: int, block_hash: Digest) -> bytes:
    return TAG_PRECOMMIT + Writer().string(chain_id).u64(height).u32(round_).digest(block_hash).done()


@dataclass(frozen=True)
class Event:
    contract: str
    kind: str
    data: bytes


@dataclass(frozen=True)
class Receipt:
    tx_id: Digest
    status: int
    code: str
    message: str
    events: list[Event] = field(default_factory=list)


def encode_receipt(rc: Receipt) -> bytes:
    return (
        Writer()
        .digest(rc.tx_id)
        .u8(rc.status)
        .string(rc.code)
        .string(rc.message)
        .list_(rc.events, lambda w, e: w.string(e.contract).string(e.kind).bytes_(e.data))
        .done()
    )


def decode_receipt(data: bytes) -> Receipt:
    r = Reader(data, "Receipt")
    tx_id = r.digest()
    status = r.u8()
    if status not in (0, 1):
        raise r.fail(f"receipt status {status} is not 0 or 1")
    rc = Receipt(
        tx_id=tx_id,
        status=status,
        code=r.string(),
        message=r.string(),
        events=r.list_(lambda rr: Event(rr.string(), rr.string(), rr.bytes_())),
    )
    r.finish()
    return rc


# ---------------------------------------------------------------------------
# §4.1 Signatures (Ed25519, RFC 8032, pure: no pre-hash, no context)
# ---------------------------------------------------------------------------


def ed25519_public_key(seed: bytes) -> PublicKey:
    sk = Ed25519PrivateKey.from_private_bytes(seed)
    return PublicKey(SIG_ED25519, sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def ed25519_sign(seed: bytes, message: bytes) -> Signature:
    return Signature(SIG_ED25519, Ed25519PrivateKey.from_private_bytes(seed).sign(message))


def verify_signature(pk: PublicKey, sig: Signature, message: bytes) -> bool:
    if sig.alg != pk.alg:
        return False
    if pk.alg != SIG_ED25519:
        raise SpecError(f"signature algorithm {pk.alg} is not supported by this tool (Ed25519 only)")
    try:
        Ed25519PublicKey.from_public_bytes(pk.key).verify(sig.sig, message)
        return True
    except (InvalidSignature, ValueError):
        return False


# ---------------------------------------------------------------------------
# §6.2 / §7 Transactions and identifiers
# ---------------------------------------------------------------------------


def sign_tx(seed: bytes, body: TxBody) -> bytes:
    """Returns the SignedTx encoding."""
    body_bytes = encode_tx_body(body)
    return encode_signed_tx(SignedTx(body_bytes, ed25519_sign(seed, TAG_TX + body_bytes)))


def tx_id_of(signed_tx_bytes: bytes) -> bytes:
    return H(signed_tx_bytes)


def block_hash_of(header_bytes: bytes) -> bytes:
    return H(header_bytes)


# ---------------------------------------------------------------------------
# §8 Merkle trees (RFC 9162 §2.1)
# ---------------------------------------------------------------------------


def merkle_leaf_hash(data: bytes) -> bytes:
    return H(b"\x00" + data)


def merkle_node_hash(left: bytes, right: bytes) -> bytes:
    return H(b"\x01" + left + right)


def split_point(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def merkle_root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) exactly as defined in RFC 9162 §2.1.1."""
    n = len(leaves)
    if n == 0:
        return H(b"")
    if n == 1:
        return merkle_leaf_hash(leaves[0])
    k = split_point(n)
    return merkle_node_hash(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def merkle_audit_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) from RFC 9162 §2.1.3.1; ordered leaf-to-root."""
    n = len(leaves)
    require(0 <= m < n, "leaf index out of range")
    if n == 1:
        return []
    k = split_point(n)
    if m < k:
        return merkle_audit_path(m, leaves[:k]) + [merkle_root(leaves[k:])]
    return merkle_audit_path(m - k, leaves[k:]) + [merkle_root(leaves[:k])]


def merkle_verify_inclusion(leaf_hash: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2 inclusion proof verification."""
    if index < 0 or index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if len(p) != 32 or sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = merkle_node_hash(p, r)
            if not fn & 1:
                while fn != 0 and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = merkle_node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# ---------------------------------------------------------------------------
# §9 State tree (Jellyfish Merkle Tree, jmt 0.12 hashing)
# ---------------------------------------------------------------------------

JMT_LEAF_TAG = b"JMT::LeafNode"
JMT_INTERNAL_TAG = b"JMT::IntrnalNode"
JMT_PLACEHOLDER = b"SPARSE_MERKLE_PLACEHOLDER_HASH__"
assert len(JMT_PLACEHOLDER) == 32


def state_key(contract: str, key: bytes) -> bytes:
    return contract.encode("utf-8") + b"\x00" + key


def jmt_leaf_hash(key_hash: bytes, value_hash: bytes) -> bytes:
    return H(JMT_LEAF_TAG + key_hash + value_hash)


def jmt_internal_hash(left: bytes, right: bytes) -> bytes:
    return H(JMT_INTERNAL_TAG + left + right)


def key_bit(key_hash: bytes, depth: int) -> int:
    """Bit of key_hash at depth (0 = most significant bit of byte 0)."""
    return (key_hash[depth // 8] >> (7 - depth % 8)) & 1


def common_prefix_bits(a: bytes, b: bytes) -> int:
    n = 0
    while n < 256 and key_bit(a, n) == key_bit(b, n):
        n += 1
    return n


def jmt_verify(
    key_hash: bytes,
    value: bytes | None,
    leaf: tuple[bytes, bytes] | None,
    siblings: list[bytes],
    root: bytes,
) -> bool:
    """Existence (value is not None) or absence (value is None) proof check."""
    n = len(siblings)
    if n > 256 or any(len(s) != 32 for s in siblings):
        return False
    if value is not None:
        if leaf is None or leaf[0] != key_hash or leaf[1] != H(value):
            return False
        current = jmt_leaf_hash(*leaf)
    elif leaf is None:
        current = JMT_PLACEHOLDER
    else:
        if leaf[0] == key_hash or common_prefix_bits(key_hash, leaf[0]) < n:
            return False
        current = jmt_leaf_hash(*leaf)
    for i, sib in enumerate(siblings):
        if key_bit(key_hash, n - 1 - i):
            current = jmt_internal_hash(sib, current)
        else:
            current = jmt_internal_hash(current, sib)
    return current == root


# ---------------------------------------------------------------------------
# §10 Text forms: hex, did:key
# ---------------------------------------------------------------------------

B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58btc(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, rem = divmod(n, 58)
        out = B58_ALPHABET[rem] + out
    zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * zeros + out


def did_key(pk: PublicKey) -> str:
    require(pk.alg == SIG_ED25519, "did:key is defined for Ed25519 keys only")
    return "did:key:z" + base58btc(b"\xed\x01" + pk.key)


def parse_public_key_text(text: str) -> PublicKey:
    prefix, sep, hexpart = text.partition(":")
    algs = {"ed25519": SIG_ED25519, "sm2": SIG_SM2}
    require(sep == ":" and prefix in algs, f"bad public key text {text!r}")
    key = unhex(hexpart, f"public key {text!r}")
    alg = algs[prefix]
    require(len(key) == SIG_KEY_LEN[alg], f"bad key length in {text!r}")
    return PublicKey(alg, key)


def unhex(s: object, what: str, length: int | None = None) -> bytes:
    require(isinstance(s, str), f"{what}: expected a hex string")
    assert isinstance(s, str)
    require(len(s) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in s), f"{what}: not valid hex")
    b = bytes.fromhex(s)
    require(length is None or len(b) == length, f"{what}: expected {length} bytes, got {len(b)}")
    return b


# ---------------------------------------------------------------------------
# §12 Verification procedure
# ---------------------------------------------------------------------------


def validator_set_from_genesis(genesis: dict) -> bytes:
    vals = genesis.get("validators")
    require(isinstance(vals, list) and vals, "genesis.json has no validators")
    vs = []
    for v in vals:
        require(isinstance(v, dict), "genesis validator entry is not an object")
        power = v.get("power")
        require(
            isinstance(power, int) and not isinstance(power, bool) and 0 <= power <= U64_MAX,
            f"bad validator power {power!r}",
        )
        vs.append(Validator(parse_public_key_text(v.get("public_key", "")), power))
    return encode_validator_set(vs)


def verify_commit(
    cert: CommitCertificate,
    validators: list[Validator],
    chain_id: str,
    height: int,
    block_hash: Digest,
) -> None:
    """§6.5: height/block_hash match, every signature valid, distinct signers, > 2/3 power."""
    require(cert.height == height, f"commit height {cert.height} != header height {height}")
    require(cert.block_hash == block_hash, "commit block_hash does not match H(header)")
    msg = precommit_message(chain_id, cert.height, cert.round, cert.block_hash)
    seen: set[int] = set()
    signed = 0
    for cs in cert.signatures:
        i = cs.validator_index
        require(i < len(validators), f"commit signer index {i} out of range")
        require(i not in seen, f"commit signer index {i} appears twice")
        seen.add(i)
        require(
            verify_signature(validators[i].public_key, cs.signature, msg),
            f"commit signature of validator {i} does not verify",
        )
        signed += validators[i].power
    total = sum(v.power for v in validators)
    require(3 * signed > 2 * total, f"commit power {signed} of {total} is not more than 2/3")


def _json_int(v: object, what: str) -> int:
    require(isinstance(v, int) and not isinstance(v, bool) and v >= 0, f"{what}: expected a non-negative integer")
    return v  # type: ignore[return-value]


def _json_path(v: object, what: str) -> list[bytes]:
    require(isinstance(v, list), f"{what}: expected a list")
    return [unhex(p, f"{what}[{i}]", 32) for i, p in enumerate(v)]  # type: ignore[arg-type]


def verify_bundle(bundle: object, trusted_validator_set: bytes, chain_id: str) -> dict:
    """Verifies a proof bundle against a trusted ValidatorSet encoding.

    Returns the verified facts; raises SpecError on any failure.
    """
    require(isinstance(bundle, dict), "bundle is not a JSON object")
    assert isinstance(bundle, dict)
    require(bundle.get("format") == "trellis-proof/1", f"unknown bundle format {bundle.get('format')!r}")
    require(
        bundle.get("suite") == SUPPORTED_SUITE,
        f"bundle suite {bundle.get('suite')!r} is not supported (only {SUPPORTED_SUITE})",
    )
    require(bundle.get("chain_id") == chain_id, f"bundle chain_id {bundle.get('chain_id')!r} != {chain_id!r}")

    # Header and block hash.
    header_bytes = unhex(bundle.get("header"), "header")
    header = decode_header(header_bytes)
    require(header.chain_id == chain_id, f"header chain_id {header.chain_id!r} != {chain_id!r}")
    for name in ("prev_hash", "tx_root", "receipt_root", "state_root", "validator_set_hash"):
        require(getattr(header, name).alg == SUITE_HASH, f"header {name} uses a non-suite hash id")
    require(header.proposer.alg == SUITE_SIG, "header proposer uses a non-suite signature id")
    block_hash = Digest(SUITE_HASH, block_hash_of(header_bytes))

    # Validator set: must be the trusted one and must be the one the header names.
    vset_bytes = unhex(bundle.get("validator_set"), "validator_set")
    require(vset_bytes == trusted_validator_set, "bundle validator_set differs from the trusted validator set")
    validators = decode_validator_set(vset_bytes)
    require(H(vset_bytes) == header.validator_set_hash.value, "H(validator_set) != header.validator_set_hash")

    # Commit certificate.
    cert = decode_commit(unhex(bundle.get("commit"), "commit"))
    verify_commit(cert, validators, chain_id, header.height, block_hash)

    claim = bundle.get("claim")
    require(isinstance(claim, dict), "claim is not a JSON object")
    assert isinstance(claim, dict)
    facts = {"height": header.height, "block_hash": block_hash.value, "header": header}
    kind = claim.get("kind")
    if kind == "tx_inclusion":
        facts.update(verify_tx_inclusion_claim(claim, header, chain_id))
    elif kind == "state":
        facts.update(verify_state_claim(claim, header))
    else:
        raise SpecError(f"unknown claim kind {kind!r}")
    facts["kind"] = kind
    return facts


def verify_tx_inclusion_claim(claim: dict, header: BlockHeader, chain_id: str) -> dict:
    tx_bytes = unhex(claim.get("tx"), "claim.tx")
    stx = decode_signed_tx(tx_bytes)
    body = decode_tx_body(stx.body)
    require(body.chain_id == chain_id, f"tx chain_id {body.chain_id!r} != {chain_id!r}")
    require(body.sender.alg == SUITE_SIG, "tx sender uses a non-suite signature id")
    require(
        verify_signature(body.sender, stx.signature, TAG_TX + stx.body),
        "transaction signature does not verify",
    )
    tx_id = tx_id_of(tx_bytes)

    index = _json_int(claim.get("index"), "claim.index")
    count = _json_int(claim.get("tx_count"), "claim.tx_count")
    require(index < count, f"claim.index {index} >= tx_count {count}")
    require(count == header.tx_count, f"claim.tx_count {count} != header.tx_count {header.tx_count}")
    path = _json_path(claim.get("path"), "claim.path")
    require(
        merkle_verify_inclusion(merkle_leaf_hash(tx_id), index, count, path, header.tx_root.value),
        "tx inclusion path does not lead to header.tx_root",
    )

    receipt_bytes = unhex(claim.get("receipt"), "claim.receipt")
    receipt = decode_receipt(receipt_bytes)
    require(receipt.tx_id == Digest(SUITE_HASH, tx_id), "receipt.tx_id does not match the transaction")
    rpath = _json_path(claim.get("receipt_path"), "claim.receipt_path")
    require(
        merkle_verify_inclusion(merkle_leaf_hash(receipt_bytes), index, count, rpath, header.receipt_root.value),
        "receipt inclusion path does not lead to header.receipt_root",
    )
    return {"tx_bytes": tx_bytes, "tx_id": tx_id, "tx_body": body, "index": index, "receipt": receipt}


def verify_state_claim(claim: dict, header: BlockHeader) -> dict:
    contract = claim.get("contract")
    require(isinstance(contract, str) and "\x00" not in contract, "claim.contract: bad contract name")
    key = unhex(claim.get("key"), "claim.key")
    raw_value = claim.get("value")
    value = None if raw_value is None else unhex(raw_value, "claim.value")
    raw_leaf = claim.get("leaf")
    leaf = None
    if raw_leaf is not None:
        require(isinstance(raw_leaf, dict), "claim.leaf: expected an object or null")
        leaf = (
            unhex(raw_leaf.get("key_hash"), "claim.leaf.key_hash", 32),
            unhex(raw_leaf.get("value_hash"), "claim.leaf.value_hash", 32),
        )
    siblings = _json_path(claim.get("siblings"), "claim.siblings")
    key_hash = H(state_key(contract, key))  # type: ignore[arg-type]
    require(
        jmt_verify(key_hash, value, leaf, siblings, header.state_root.value),
        "state proof does not lead to header.state_root",
    )
    return {"contract": contract, "key": key, "value": value}


# ---------------------------------------------------------------------------
# Bundle corruption (the verifier must be able to fail)
# ---------------------------------------------------------------------------


def flip_hex_bit(hex_str: str, byte_index: int, bit: int = 0) -> str:
    b = bytearray(bytes.fromhex(hex_str))
    b[byte_index % len(b)] ^= 1 << bit
    return b.hex()


def corrupted_bundles(bundle: dict) -> list[tuple[str, dict]]:
    """One-bit corruptions of several fields; every one must be rejected."""
    out: list[tuple[str, dict]] = []

    def variant(label: str, mutate: Callable[[dict], None]) -> None:
        b = json.loads(json.dumps(bundle))
        mutate(b)
        out.append((label, b))

    for label, key in (("header", "header"), ("commit", "commit"), ("validator_set", "validator_set")):
        n = len(bytes.fromhex(bundle[key]))
        for pos in (0, n // 2, n - 1):
            variant(f"{label} byte {pos}", lambda b, k=key, p=pos: b.__setitem__(k, flip_hex_bit(b[k], p)))
    claim = bundle["claim"]
    for ckey in ("tx", "receipt"):
        n = len(bytes.fromhex(claim[ckey]))
        for pos in (0, n // 2, n - 1):
            variant(
                f"claim.{ckey} byte {pos}",
                lambda b, k=ckey, p=pos: b["claim"].__setitem__(k, flip_hex_bit(b["claim"][k], p)),
            )
    for pkey in ("path", "receipt_path"):
        if claim[pkey]:
            variant(f"claim.{pkey}[0]", lambda b, k=pkey: b["claim"][k].__setitem__(0, flip_hex_bit(b["claim"][k][0], 31, 7)))
        else:
            # An empty path has no element to flip; an extra element must be rejected instead.
            variant(f"claim.{pkey} + extra element", lambda b, k=pkey: b["claim"][k].append("00" * 32))
    variant("claim.index + 1", lambda b: b["claim"].__setitem__("index", b["claim"]["index"] + 1))
    return out


def require_all_rejected(bundle: dict, trusted_vset: bytes, chain_id: str) -> int:
    variants = corrupted_bundles(bundle)
    for label, b in variants:
        try:
            verify_bundle(b, trusted_vset, chain_id)
        except SpecError:
            continue
        raise SpecError(f"self-check failed: corrupted bundle ({label}) was accepted")
    return len(variants)


# ---------------------------------------------------------------------------
# Node HTTP API
# ---------------------------------------------------------------------------


def http_json(method: str, url: str, body: object | None = None, timeout: float = 90.0) -> object:
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        raw = e.read()
        detail = raw.decode("utf-8", "replace")[:500]
        try:
            err = json.loads(raw)["error"]
            detail = f"{err.get('code')}: {err.get('message')}"
        except (ValueError, KeyError, TypeError):
            pass
        raise SpecError(f"{method} {url} -> HTTP {e.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        raise SpecError(f"{method} {url} failed: {e}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise SpecError(f"{method} {url}: response is not JSON") from None


def run_interop(node: str, seed_hex: str, genesis_path: str) -> str:
    node = node.rstrip("/")
    seed = unhex(seed_hex.strip(), "--seed-hex", 32)
    with open(genesis_path, "rb") as f:
        genesis = json.load(f)
    require(isinstance(genesis, dict), "genesis.json is not a JSON object")
    require(
        genesis.get("suite") == SUPPORTED_SUITE,
        f"genesis suite {genesis.get('suite')!r} is not supported (this tool supports only {SUPPORTED_SUITE})",
    )
    chain_id = genesis.get("chain_id")
    require(isinstance(chain_id, str) and chain_id, "genesis.json has no chain_id")
    trusted_vset = validator_set_from_genesis(genesis)

    chain = http_json("GET", f"{node}/api/v1/chain")
    require(isinstance(chain, dict), "/api/v1/chain: not an object")
    assert isinstance(chain, dict)
    require(chain.get("suite") == SUPPORTED_SUITE, f"node suite {chain.get('suite')!r} is not {SUPPORTED_SUITE}")
    require(chain.get("chain_id") == chain_id, f"node chain_id {chain.get('chain_id')!r} != genesis {chain_id!r}")

    sender = ed25519_public_key(seed)
    account = http_json("GET", f"{node}/api/v1/accounts/{sender.text()}")
    require(isinstance(account, dict), "account response is not an object")
    assert isinstance(account, dict)
    require(account.get("public_key") == sender.text(), f"account public_key {account.get('public_key')!r} != {sender.text()}")
    require(account.get("did") == did_key(sender), f"account did {account.get('did')!r} != {did_key(sender)}")
    nonce = _json_int(account.get("nonce"), "account nonce")

    # Build, sign, identify (§6.1, §6.2, §7).
    args = json.dumps(
        {"key": "interop-" + secrets.token_hex(8), "hash": hashlib.sha256(os.urandom(32)).hexdigest()},
        separators=(",", ":"),
    ).encode("utf-8")
    body = TxBody(
        chain_id=chain_id,
        sender=sender,
        nonce=nonce,
        expiry_ms=int(time.time() * 1000) + 60_000,
        contract="notary",
        method="anchor",
        args=args,
    )
    tx_bytes = sign_tx(seed, body)
    tx_id = tx_id_of(tx_bytes)

    resp = http_json("POST", f"{node}/api/v1/txs", {"tx": tx_bytes.hex(), "wait": "commit"})
    require(isinstance(resp, dict), "submit response is not an object")
    assert isinstance(resp, dict)
    require(resp.get("tx_id") == tx_id.hex(), f"node tx_id {resp.get('tx_id')!r} != local tx_id {tx_id.hex()}")
    require(resp.get("status") == "committed", f"submit status {resp.get('status')!r}, expected 'committed'")
    receipt_json = resp.get("receipt") or {}
    require(
        isinstance(receipt_json, dict) and receipt_json.get("status") == "ok",
        f"receipt not ok: {receipt_json!r}",
    )
    height = _json_int(resp.get("height"), "submit height")

    bundle = http_json("GET", f"{node}/api/v1/txs/{tx_id.hex()}/proof")
    require(isinstance(bundle, dict), "proof bundle is not an object")
    assert isinstance(bundle, dict)
    require(
        isinstance(bundle.get("claim"), dict) and bundle["claim"].get("kind") == "tx_inclusion",
        "proof bundle claim kind is not tx_inclusion",
    )
    facts = verify_bundle(bundle, trusted_vset, chain_id)
    require(facts["height"] == height, f"header height {facts['height']} != reported height {height}")
    require(facts["tx_bytes"] == tx_bytes, "claim.tx differs from the bytes that were submitted")
    require(facts["tx_id"] == tx_id, "tx_id mismatch")
    receipt: Receipt = facts["receipt"]
    require(receipt.status == 0, f"receipt status {receipt.status} ({receipt.code}: {receipt.message})")
    header: BlockHeader = facts["header"]
    require(header.time_ms <= body.expiry_ms, "block time is after the transaction's expiry")

    require_all_rejected(bundle, trusted_vset, chain_id)
    return f"interop ok tx_id={tx_id.hex()} height={height}"


# ---------------------------------------------------------------------------
# --self-test: offline checks of every piece above
# ---------------------------------------------------------------------------

# RFC 8032 §7.1 TEST 1
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUB = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

# Certificate Transparency test vectors (RFC 6962 / RFC 9162 tree hash, SHA-256).
CT_LEAVES = [bytes.fromhex(x) for x in [
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f",
]]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# Worked example of docs/spec/encoding.md §13 (must stay in sync with the spec).
EXAMPLE_BODY = TxBody(
    chain_id="trellis-example",
    sender=PublicKey(SIG_ED25519, RFC8032_PUB),
    nonce=0,
    expiry_ms=1_700_000_060_000,
    contract="notary",
    method="anchor",
    args=b'{"key":"example","hash":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}',
)
EXAMPLE_TX_BODY_HEX = (
    "01" "0000000f" "7472656c6c69732d6578616d706c65"
    "01" "00000020" "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    "0000000000000000" "0000018bcfe65260"
    "00000006" "6e6f74617279" "00000006" "616e63686f72"
    "0000005b" "7b226b6579223a226578616d706c65222c2268617368223a22326366323464626135666230613330"
    "65323665383362326163356239653239653162313631653563316661373432356537333034333336323933"
    "386239383234227d"
)
EXAMPLE_SIGNATURE_HEX = (
    "ce5a5fbe347509b88c63b6200eb1d5efd97f21c667bb6902f5d919904464cccb"
    "d5c4096322191bfae1be1eb1198c7dcd81cde09aac2e6945a90e6c5fd0329309"
)
EXAMPLE_SIGNED_TX_HEX = "000000bc" + EXAMPLE_TX_BODY_HEX + "01" + "00000040" + EXAMPLE_SIGNATURE_HEX
EXAMPLE_DID = "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw"
EXAMPLE_TX_ID_HEX = "5c89f25a276701d7ba6c921637f8f50ad74d4c729b05ebb32c3f52a139963f98"


def merkle_root_iterative(leaves: list[bytes]) -> bytes:
    """Second, independent MTH computation (bottom-up, carrying odd nodes up)."""
    if not leaves:
        return H(b"")
    level = [merkle_leaf_hash(d) for d in leaves]
    while len(level) > 1:
        nxt = [merkle_node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def smt_root(items: list[tuple[bytes, bytes]], depth: int) -> bytes:
    """Binary view of a JMT: an empty subtree is the placeholder, a lone leaf is its leaf hash."""
    if not items:
        return JMT_PLACEHOLDER
    if len(items) == 1:
        return jmt_leaf_hash(*items[0])
    left = [it for it in items if key_bit(it[0], depth) == 0]
    right = [it for it in items if key_bit(it[0], depth) == 1]
    return jmt_internal_hash(smt_root(left, depth + 1), smt_root(right, depth + 1))


def smt_proof(items: list[tuple[bytes, bytes]], key_hash: bytes) -> tuple[tuple[bytes, bytes] | None, list[bytes]]:
    top_down: list[bytes] = []
    depth, cur = 0, items
    while len(cur) > 1:
        b = key_bit(key_hash, depth)
        top_down.append(smt_root([it for it in cur if key_bit(it[0], depth) != b], depth + 1))
        cur = [it for it in cur if key_bit(it[0], depth) == b]
        depth += 1
    return (cur[0] if cur else None), top_down[::-1]


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise SpecError(f"self-test: {msg}")


def expect_error(fn: Callable[[], object], msg: str) -> None:
    try:
        fn()
    except SpecError:
        return
    raise SpecError(f"self-test: expected failure: {msg}")


def make_test_chain(chain_id: str) -> dict:
    """Synthesises a block with 4 validators, 5 txs and a small state tree."""
    val_seeds = [bytes([i + 1]) * 32 for i in range(4)]
    powers = [10, 20, 30, 40]
    vals = [Validator(ed25519_public_key(s), p) for s, p in zip(val_seeds, powers)]
    vset_bytes = encode_validator_set(vals)
    ordered = decode_validator_set(vset_bytes)
    seed_of = {ed25519_public_key(s).key: s for s in val_seeds}

    user_seed = bytes(range(32))
    txs = []
    for i in range(5):
        body = TxBody(chain_id, ed25519_public_key(user_seed), i, 1_700_000_060_000, "notary", "anchor",
                      json.dumps({"key": f"k{i}", "hash": H(bytes([i])).hex()}, separators=(",", ":")).encode())
        txs.append(sign_tx(user_seed, body))
    tx_ids = [tx_id_of(t) for t in txs]
    receipts = [
        encode_receipt(Receipt(Digest(SUITE_HASH, tid), 0 if i != 3 else 1, "" if i != 3 else "dup_key",
                               "" if i != 3 else "key exists",
                               [Event("notary", "anchored", b'{"i":%d}' % i)] if i != 3 else []))
        for i, tid in enumerate(tx_ids)
    ]
    state_items = sorted(
        (H(state_key("notary", f"k{i}".encode())), H(f"v{i}".encode())) for i in range(20)
    )
    header = BlockHeader(
        chain_id=chain_id, height=7, time_ms=1_700_000_000_000, tx_count=len(tx_ids),
        prev_hash=Digest(SUITE_HASH, H(b"prev")),
        tx_root=Digest(SUITE_HASH, merkle_root(tx_ids)),
        receipt_root=Digest(SUITE_HASH, merkle_root(receipts)),
        state_root=Digest(SUITE_HASH, smt_root(state_items, 0)),
        validator_set_hash=Digest(SUITE_HASH, H(vset_bytes)),
        proposer=ordered[0].public_key,
    )
    header_bytes = encode_header(header)
    bh = Digest(SUITE_HASH, block_hash_of(header_bytes))
    msg = precommit_message(chain_id, 7, 1, bh)
    signers = [1, 2, 3]  # 90 of 100
    cert = CommitCertificate(7, 1, bh, [
        CommitSig(i, ed25519_sign(seed_of[ordered[i].public_key.key], msg)) for i in signers
    ])
    return {
        "vset": vset_bytes, "validators": ordered, "seed_of": seed_of, "txs": txs, "tx_ids": tx_ids,
        "receipts": receipts, "state_items": state_items, "header": header, "header_bytes": header_bytes,
        "cert": cert, "msg": msg, "block_hash": bh,
    }


def self_test() -> str:
    count = 0

    # §4.1 Ed25519 (RFC 8032 TEST 1).
    pk = ed25519_public_key(RFC8032_SEED)
    check(pk.key == RFC8032_PUB, "RFC 8032 public key")
    check(ed25519_sign(RFC8032_SEED, b"").sig == RFC8032_SIG, "RFC 8032 signature")
    check(verify_signature(pk, Signature(SIG_ED25519, RFC8032_SIG), b""), "RFC 8032 verify")
    check(not verify_signature(pk, Signature(SIG_ED25519, RFC8032_SIG), b"x"), "RFC 8032 wrong message")
    check(not verify_signature(pk, Signature(SIG_SM2, RFC8032_SIG), b""), "alg id mismatch must fail")
    count += 5

    # §10 base58btc / did:key.
    check(base58btc(b"hello world") == "StV1DL6CwTryKyV", "base58btc vector")
    check(base58btc(b"\x00\x00\x01") == "112", "base58btc leading zeros")
    check(did_key(pk).startswith("did:key:z6Mk"), "did:key prefix for Ed25519")
    check(parse_public_key_text(pk.text()) == pk, "public key text round trip")
    count += 4

    # §8 Merkle: CT vectors, two independent MTH computations, every audit path.
    for n in range(len(CT_ROOTS)):
        check(merkle_root(CT_LEAVES[:n]).hex() == CT_ROOTS[n], f"CT root for {n} leaves")
        count += 1
    for n in range(0, 40):
        leaves = [H(bytes([i, n])) for i in range(n)]
        root = merkle_root(leaves)
        check(root == merkle_root_iterative(leaves), f"MTH two ways, n={n}")
        for m in range(n):
            path = merkle_audit_path(m, leaves)
            lh = merkle_leaf_hash(leaves[m])
            check(merkle_verify_inclusion(lh, m, n, path, root), f"inclusion m={m} n={n}")
            check(not merkle_verify_inclusion(lh, m, n, path + [root], root), f"extra element m={m} n={n}")
            if n > 1:
                check(not merkle_verify_inclusion(lh, (m + 1) % n, n, path, root), f"wrong index m={m} n={n}")
                bad = list(path)
                bad[0] = bytes([bad[0][0] ^ 1]) + bad[0][1:]
                check(not merkle_verify_inclusion(lh, m, n, bad, root), f"bad path m={m} n={n}")
                check(not merkle_verify_inclusion(lh, m, n, path[:-1], root), f"short path m={m} n={n}")
            count += 1
    check(not merkle_verify_inclusion(merkle_leaf_hash(b""), 0, 0, [], H(b"")), "empty tree has no leaves")

    # §3/§6 round trips and strictness.
    body_bytes = encode_tx_body(EXAMPLE_BODY)
    check(decode_tx_body(body_bytes) == EXAMPLE_BODY, "TxBody round trip")
    stx_bytes = sign_tx(RFC8032_SEED, EXAMPLE_BODY)
    stx = decode_signed_tx(stx_bytes)
    check(stx.body == body_bytes and encode_signed_tx(stx) == stx_bytes, "SignedTx round trip")
    check(verify_signature(pk, stx.signature, TAG_TX + body_bytes), "tx signature verifies")
    check(not verify_signature(pk, stx.signature, body_bytes), "tx signature needs the domain tag")
    expect_error(lambda: decode_tx_body(body_bytes + b"\x00"), "trailing byte")
    expect_error(lambda: decode_tx_body(body_bytes[:-1]), "truncated")
    expect_error(lambda: decode_tx_body(b"\x02" + body_bytes[1:]), "unknown version")
    expect_error(lambda: decode_signed_tx(stx_bytes[:-65] + b"\x03" + stx_bytes[-64:]), "unknown sig alg")
    bad_utf8 = Writer().u8(1).bytes_(b"\xff").done()
    expect_error(lambda: Reader(bad_utf8[1:], "x").string(), "invalid UTF-8")
    expect_error(lambda: Reader(b"\x02", "x").option(Reader.u8), "option tag 2")
    check(Reader(b"\x01\x07", "x").option(Reader.u8) == 7, "option present")
    check(Writer().option(None, Writer.u8).done() == b"\x00", "option absent")
    count += 12

    # §13 worked example vector.
    check(body_bytes.hex() == EXAMPLE_TX_BODY_HEX, "example TxBody hex")
    check(stx_bytes.hex() == EXAMPLE_SIGNED_TX_HEX, "example SignedTx hex")
    check(tx_id_of(stx_bytes).hex() == EXAMPLE_TX_ID_HEX, "example tx_id")
    check(did_key(pk) == EXAMPLE_DID, "example did:key")
    count += 4

    # Synthetic chain: headers, commits, bundles.
    chain_id = "trellis-selftest"
    c = make_test_chain(chain_id)
    check(decode_header(c["header_bytes"]) == c["header"], "BlockHeader round trip")
    check(decode_commit(encode_commit(c["cert"])) == c["cert"], "CommitCertificate round trip")
    for rb in c["receipts"]:
        check(encode_receipt(decode_receipt(rb)) == rb, "Receipt round trip")
    check(decode_validator_set(c["vset"]) == c["validators"], "ValidatorSet round trip")
    vals = c["validators"]
    unsorted = Writer().list_(vals[::-1], lambda w, v: w.public_key(v.public_key).u64(v.power)).done()
    expect_error(lambda: decode_validator_set(unsorted), "unsorted validator set")
    genesis = {"validators": [{"name": f"v{i}", "public_key": v.public_key.text(), "power": v.power}
                              for i, v in enumerate(vals[::-1])]}
    check(validator_set_from_genesis(genesis) == c["vset"], "validator set from genesis is sorted")
    count += 4

    bh, msg, seed_of = c["block_hash"], c["msg"], c["seed_of"]

    def cert_with(indexes: list[int]) -> CommitCertificate:
        return CommitCertificate(7, 1, bh, [
            CommitSig(i, ed25519_sign(seed_of[vals[i].public_key.key], msg)) for i in indexes
        ])

    verify_commit(cert_with([2, 3]), vals, chain_id, 7, bh)  # 70 of 100
    expect_error(lambda: verify_commit(cert_with([1, 3]), vals, chain_id, 7, bh), "60 of 100")
    expect_error(lambda: verify_commit(cert_with([3, 3]), vals, chain_id, 7, bh), "duplicate signer")
    expect_error(lambda: verify_commit(cert_with([2, 3]), vals, chain_id, 8, bh), "height mismatch")
    expect_error(lambda: verify_commit(cert_with([2, 3]), vals, "other", 7, bh), "chain id in message")
    eq = [Validator(v.public_key, 1) for v in vals[:3]]
    expect_error(lambda: verify_commit(cert_with([0, 1]), eq, chain_id, 7, bh), "exactly 2/3")
    verify_commit(cert_with([0, 1, 2]), eq, chain_id, 7, bh)
    reordered = replace(cert_with([2, 3]), signatures=cert_with([2, 3]).signatures[::-1])
    verify_commit(reordered, vals, chain_id, 7, bh)  # order of signatures is not significant
    wrong_signer = CommitCertificate(7, 1, bh, [CommitSig(3, cert_with([2]).signatures[0].signature),
                                               CommitSig(2, cert_with([3]).signatures[0].signature)])
    expect_error(lambda: verify_commit(wrong_signer, vals, chain_id, 7, bh), "signature under wrong index")
    count += 9

    def tx_bundle(i: int) -> dict:
        return {
            "format": "trellis-proof/1", "chain_id": chain_id, "suite": SUPPORTED_SUITE,
            "header": c["header_bytes"].hex(), "commit": encode_commit(c["cert"]).hex(),
            "validator_set": c["vset"].hex(),
            "claim": {"kind": "tx_inclusion", "tx": c["txs"][i].hex(), "index": i, "tx_count": len(c["txs"]),
                      "path": [p.hex() for p in merkle_audit_path(i, c["tx_ids"])],
                      "receipt": c["receipts"][i].hex(),
                      "receipt_path": [p.hex() for p in merkle_audit_path(i, c["receipts"])]},
        }

    for i in range(len(c["txs"])):
        b = tx_bundle(i)
        facts = verify_bundle(b, c["vset"], chain_id)
        check(facts["tx_id"] == c["tx_ids"][i] and facts["height"] == 7, "bundle facts")
        count += 1 + require_all_rejected(b, c["vset"], chain_id)
    expect_error(lambda: verify_bundle(tx_bundle(0), c["vset"], "other-chain"), "wrong chain id")
    other_vset = encode_validator_set(vals[:3])
    expect_error(lambda: verify_bundle(tx_bundle(0), other_vset, chain_id), "untrusted validator set")
    count += 2

    # Every single-bit flip of the header, commit, tx and receipt must be rejected.
    b0 = tx_bundle(2)
    for where in ("header", "commit", "tx", "receipt"):
        holder = b0 if where in ("header", "commit") else b0["claim"]
        orig = holder[where]
        for pos in range(len(bytes.fromhex(orig))):
            for bit in range(8):
                holder[where] = flip_hex_bit(orig, pos, bit)
                expect_error(lambda: verify_bundle(b0, c["vset"], chain_id), f"{where} byte {pos} bit {bit}")
                count += 1
        holder[where] = orig
    verify_bundle(b0, c["vset"], chain_id)

    # §9 JMT state proofs through the bundle verifier.
    items = c["state_items"]
    root = c["header"].state_root.value

    def state_bundle(key: bytes, value: bytes | None) -> dict:
        kh = H(state_key("notary", key))
        leaf, sibs = smt_proof(items, kh)
        b = tx_bundle(0)
        b["claim"] = {"kind": "state", "contract": "notary", "key": key.hex(),
                      "value": None if value is None else value.hex(),
                      "leaf": None if leaf is None else {"key_hash": leaf[0].hex(), "value_hash": leaf[1].hex()},
                      "siblings": [s.hex() for s in sibs]}
        return b

    for i in range(20):
        b = state_bundle(f"k{i}".encode(), f"v{i}".encode())
        verify_bundle(b, c["vset"], chain_id)
        expect_error(lambda: verify_bundle(state_bundle(f"k{i}".encode(), b"other"), c["vset"], chain_id),
                     "wrong value")
        expect_error(lambda: verify_bundle(state_bundle(f"k{i}".encode(), None), c["vset"], chain_id),
                     "absence of a present key")
        if b["claim"]["siblings"]:
            b["claim"]["siblings"][0] = flip_hex_bit(b["claim"]["siblings"][0], 0)
            expect_error(lambda: verify_bundle(b, c["vset"], chain_id), "bad sibling")
        count += 4
    kinds = set()
    for i in range(20, 60):
        key = f"k{i}".encode()
        b = state_bundle(key, None)
        verify_bundle(b, c["vset"], chain_id)
        kinds.add(b["claim"]["leaf"] is None)
        expect_error(lambda: verify_bundle(state_bundle(key, b"v"), c["vset"], chain_id), "existence of absent key")
        count += 2
    check(kinds == {True, False}, "both absence proof shapes exercised")
    check(jmt_verify(H(b"x"), None, None, [], JMT_PLACEHOLDER), "empty tree absence")
    check(root == smt_root(items, 0), "state root")
    count += 2

    return f"{count} passed, 0 failed"


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--node", help="node base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--seed-hex", help="64 hex chars: Ed25519 seed of a registered member account")
    ap.add_argument("--genesis", help="path to the chain's genesis.json")
    ap.add_argument("--self-test", action="store_true", help="run offline checks of the encoder/decoder/merkle/verifier")
    a = ap.parse_args(argv)
    try:
        if a.self_test:
            print(self_test())
            return 0
        if not (a.node and a.seed_hex and a.genesis):
            ap.error("--node, --seed-hex and --genesis are required (or use --self-test)")
        print(run_interop(a.node, a.seed_hex, a.genesis))
        return 0
    except SpecError as e:
        print(f"interop FAILED: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"interop FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
