/*
 * Trellis proof-bundle verifier for the browser (docs/spec/encoding.md, §12).
 *
 * Checks a trellis-proof/1 bundle with nothing but WebCrypto (Ed25519 and SHA-256). The checks
 * run in the order of chain_core::proof::verify_bundle and fail with its error codes, so a bundle
 * rejected here is rejected by the node's own verifier with the same code.
 *
 * Exposes window.TrellisVerify.verifyBundle(bundle, trustedValidatorSetHex) and wires every
 * button[data-verify-url] of the page (see bindPage at the end).
 */
(() => {
  'use strict';

  const FORMAT = 'trellis-proof/1';
  const SUITE = 'ed25519-sha256';
  const SHA256 = 1;
  const ED25519 = 1;
  const SM2 = 2;
  const KEY_LEN = { 1: 32, 2: 65 };
  // Decoder limits of the reference implementation: past them it rejects the input as malformed.
  const LIMIT = { field: 1 << 24, name: 64, args: 1 << 20, keyOrSig: 128, list: 10000, events: 100000 };

  const enc = new TextEncoder();
  // fatal: invalid UTF-8 throws; ignoreBOM: keep a leading U+FEFF, as Rust's from_utf8 does.
  const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  const TAG_TX = enc.encode('trellis/tx/v1\0');
  const TAG_PRECOMMIT = enc.encode('trellis/precommit/v1\0');
  const JMT_LEAF = enc.encode('JMT::LeafNode');
  const JMT_INTERNAL = enc.encode('JMT::IntrnalNode');
  const JMT_PLACEHOLDER = enc.encode('SPARSE_MERKLE_PLACEHOLDER_HASH__');

  class VerifyError {
    constructor(code, message) {
      this.code = code;
      this.message = message;
    }
  }
  const fail = (code, message) => {
    throw new VerifyError(code, message);
  };

  // ------------------------------------------------------------------ bytes

  function hexToBytes(s) {
    if (typeof s !== 'string' || s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) return null;
    const out = new Uint8Array(s.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(i * 2, 2), 16);
    return out;
  }
  const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  const short = (b) => toHex(b).slice(0, 16) + '…';
  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }
  const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  const digestEq = (a, b) => a.alg === b.alg && equal(a.bytes, b.bytes);
  // Big-endian encoding of an integer (number or BigInt) on `size` bytes.
  function be(n, size) {
    const out = new Uint8Array(size);
    for (let i = size - 1, v = BigInt(n); i >= 0; i--, v >>= 8n) out[i] = Number(v & 255n);
    return out;
  }
  function toBig(b, littleEndian) {
    let n = 0n;
    for (const x of littleEndian ? Array.from(b).reverse() : b) n = (n << 8n) | BigInt(x);
    return n;
  }
  function modPow(base, exp, m) {
    let r = 1n;
    for (base %= m; exp > 0n; exp >>= 1n, base = (base * base) % m) if (exp & 1n) r = (r * base) % m;
    return r;
  }
  const asNumber = (big) => (big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big.toString());

  // ------------------------------------------------------------------ public-key validation
  // The reference decoder only accepts keys that are points of their curve and refuses small-order
  // Ed25519 keys. Checking the same here keeps "malformed" and "bad_commit" apart as it does.

  const ED_P = (1n << 255n) - 19n;
  const ED_D = ((ED_P - 121665n) * modPow(121666n, ED_P - 2n, ED_P)) % ED_P;
  const ED_L = (1n << 252n) + 27742317777372353535851937790883648493n;
  // y of the 8 points of small order: identity, order 2, order 4, order 8 (±).
  const ED_Y8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022n;
  const ED_SMALL_Y = [1n, ED_P - 1n, 0n, ED_Y8, ED_P - ED_Y8];

  // 'invalid' (no point has this encoding), 'weak' (small order) or 'ok'. Like curve25519-dalek,
  // y is taken modulo p and x = 0 with the sign bit set is accepted.
  function ed25519PointStatus(b) {
    const y = (toBig(b, true) & ((1n << 255n) - 1n)) % ED_P;
    const yy = (y * y) % ED_P;
    const xx = (((yy - 1n + ED_P) % ED_P) * modPow((ED_D * yy + 1n) % ED_P, ED_P - 2n, ED_P)) % ED_P;
    if (xx !== 0n && modPow(xx, (ED_P - 1n) / 2n, ED_P) !== 1n) return 'invalid';
    return ED_SMALL_Y.includes(y) ? 'weak' : 'ok';
  }

  const SM2_P = 0xfffffffeffffffffffffffffffffffffffffffff00000000ffffffffffffffffn;
  const SM2_B = 0x28e9fa9e9d9f5e344d5a9e4bcf6509a7f39789f515ab8f92ddbcbd414d940e93n;
  // Uncompressed SEC1 point on the SM2 curve y² = x³ - 3x + b.
  function sm2OnCurve(b) {
    const x = toBig(b.subarray(1, 33)), y = toBig(b.subarray(33));
    if (b[0] !== 4 || x >= SM2_P || y >= SM2_P) return false;
    return ((y * y - x * x * x + 3n * x - SM2_B) % SM2_P + SM2_P) % SM2_P === 0n;
  }

  // ------------------------------------------------------------------ strict decoder (§3)
  // Reader errors are plain Errors; decodeHex turns them into the reference's "malformed".

  class Reader {
    constructor(bytes) {
      this.b = bytes;
      this.pos = 0;
    }
    take(n, what) {
      if (n > this.b.length - this.pos) throw new Error('unexpected end of input while reading ' + what);
      this.pos += n;
      return this.b.subarray(this.pos - n, this.pos);
    }
    u8(what) { return this.take(1, what)[0]; }
    u32(what) { return Number(toBig(this.take(4, what))); }
    u64(what) { return toBig(this.take(8, what)); }
    bytes(what, limit = LIMIT.field) {
      const n = this.u32(what);
      if (n > limit) throw new Error(`length ${n} of ${what} exceeds the limit ${limit}`);
      return this.take(n, what);
    }
    str(what, limit) {
      const b = this.bytes(what, limit);
      try { return utf8.decode(b); } catch (e) { throw new Error('invalid UTF-8 in ' + what); }
    }
    version() {
      const v = this.u8('version');
      if (v !== 1) throw new Error('unsupported version ' + v);
    }
    digest(what) {
      const alg = this.u8(what);
      if (alg !== 1 && alg !== 2) throw new Error(`unknown hash algorithm id ${alg} in ${what}`);
      return { alg, bytes: this.take(32, what) };
    }
    algorithm(what) {
      const alg = this.u8(what);
      if (alg !== ED25519 && alg !== SM2) throw new Error(`unknown signature algorithm id ${alg} in ${what}`);
      return alg;
    }
    publicKey(what) {
      const alg = this.algorithm(what);
      const bytes = this.bytes(what, LIMIT.keyOrSig);
      if (bytes.length !== KEY_LEN[alg]) throw new Error(`${what}: wrong key length ${bytes.length}`);
      const status = alg === ED25519 ? ed25519PointStatus(bytes) : sm2OnCurve(bytes) ? 'ok' : 'invalid';
      if (status !== 'ok') throw new Error(`${what}: ${status === 'weak' ? 'weak (small-order) key' : 'not a curve point'}`);
      return { alg, bytes };
    }
    signature(what) {
      const alg = this.algorithm(what);
      const bytes = this.bytes(what, LIMIT.keyOrSig);
      if (bytes.length !== 64) throw new Error(`${what}: wrong signature length ${bytes.length}`);
      return { alg, bytes };
    }
    list(what, limit, item) {
      const n = this.u32(what);
      // Every item takes at least one byte: a larger count cannot be real, so nothing is allocated.
      if (n > limit || n > this.b.length - this.pos) throw new Error(`impossible count ${n} of ${what}`);
      return Array.from({ length: n }, () => item(this));
    }
    // Parse the whole of `bytes` with `fn`: leftover bytes are an error.
    static all(bytes, fn) {
      const r = new Reader(bytes);
      const value = fn(r);
      if (r.pos !== bytes.length) throw new Error(`${bytes.length - r.pos} trailing bytes after the value`);
      return value;
    }
  }

  const decodeHeader = (bytes) => Reader.all(bytes, (r) => {
    r.version();
    return {
      chain_id: r.str('chain_id', LIMIT.name), height: r.u64('height'), time_ms: r.u64('time_ms'),
      tx_count: r.u32('tx_count'), prev_hash: r.digest('prev_hash'), tx_root: r.digest('tx_root'),
      receipt_root: r.digest('receipt_root'), state_root: r.digest('state_root'),
      validator_set_hash: r.digest('validator_set_hash'), proposer: r.publicKey('proposer'),
    };
  });

  // Only the canonical form is valid: sorted by (algorithm id, key bytes), no duplicate key, no
  // zero power, not empty, total power at most u64::MAX / 4.
  function decodeValidatorSet(bytes) {
    const vals = Reader.all(bytes, (r) =>
      r.list('validators', LIMIT.list, () => ({ key: r.publicKey('validator key'), power: r.u64('power') })));
    if (vals.length === 0) throw new Error('no validator with positive power');
    let total = 0n;
    // Keys of one algorithm have one length, so comparing "id + hex" strings compares the bytes.
    const order = (v) => v.key.alg + toHex(v.key.bytes);
    vals.forEach((v, i) => {
      if (v.power === 0n) throw new Error(`validator ${i} has zero power`);
      if (i > 0 && order(vals[i - 1]) >= order(v)) throw new Error('not in canonical order (or a duplicate key)');
      total += v.power;
    });
    if (total > ((1n << 64n) - 1n) / 4n) throw new Error('total voting power too large');
    return { validators: vals, total };
  }

  const decodeCommit = (bytes) => Reader.all(bytes, (r) => ({
    height: r.u64('height'), round: r.u32('round'), block_hash: r.digest('block_hash'),
    signatures: r.list('signatures', LIMIT.list, () =>
      ({ index: r.u32('validator_index'), signature: r.signature('signature') })),
  }));

  function decodeSignedTx(bytes) {
    const tx = Reader.all(bytes, (r) => ({ bodyBytes: r.bytes('body', LIMIT.args + 4096), signature: r.signature('signature') }));
    tx.body = Reader.all(tx.bodyBytes, (r) => {
      r.version();
      return {
        chain_id: r.str('chain_id', LIMIT.name), sender: r.publicKey('sender'), nonce: r.u64('nonce'),
        expiry_ms: r.u64('expiry_ms'), contract: r.str('contract', LIMIT.name), method: r.str('method', LIMIT.name),
        args: r.bytes('args', LIMIT.args),
      };
    });
    return tx;
  }

  const decodeReceipt = (bytes) => Reader.all(bytes, (r) => {
    const tx_id = r.digest('tx_id');
    const status = r.u8('status');
    if (status > 1) throw new Error('unknown receipt status ' + status);
    return {
      tx_id, status: status === 0 ? 'ok' : 'failed', code: r.str('code'), message: r.str('message'),
      events: r.list('events', LIMIT.events, () => ({ contract: r.str('event'), kind: r.str('event'), data: r.bytes('event') })),
    };
  });

  // Hex field → { bytes, value }, failing as "malformed" like the reference.
  function decodeHex(what, hex, decode) {
    const bytes = hexToBytes(hex);
    if (!bytes) fail('malformed', what + ' is not hex');
    try {
      return { bytes, value: decode(bytes) };
    } catch (e) {
      return fail('malformed', `${what}: ${e.message}`);
    }
  }

  function hashList(what, list, code) {
    return list.map((s) => {
      const b = hexToBytes(s);
      if (!b) fail(code, what + ' is not hex');
      if (b.length !== 32) fail(code, what + ' entries are 32 bytes');
      return b;
    });
  }

  // ------------------------------------------------------------------ WebCrypto (§12.3)

  const subtle = () => globalThis.crypto && globalThis.crypto.subtle;
  const H = async (...parts) => new Uint8Array(await subtle().digest('SHA-256', concat(...parts)));

  // RFC 8032 §7.1 TEST 1 shows whether this browser can verify Ed25519 at all.
  const PROBE_KEY = 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a';
  const PROBE_SIG = 'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555' +
    'fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b';
  let probe = null;
  function webCryptoProblem() {
    if (!subtle()) {
      return Promise.resolve('WebCrypto (crypto.subtle) is not available: ' +
        'the page must be served over HTTPS (or from localhost)');
    }
    probe = probe || (async () => {
      try {
        const key = await subtle().importKey('raw', hexToBytes(PROBE_KEY), { name: 'Ed25519' }, false, ['verify']);
        if (await subtle().verify({ name: 'Ed25519' }, key, hexToBytes(PROBE_SIG), new Uint8Array(0))) return null;
      } catch (e) { /* reported below */ }
      return 'this browser\'s WebCrypto cannot verify Ed25519 signatures: use a current browser, on a page served over HTTPS';
    })();
    return probe;
  }

  // Ed25519 as the reference checks it (verify_strict): S < L and R not of small order, on top of
  // the RFC 8032 equation that WebCrypto checks. A key WebCrypto refuses simply does not verify.
  async function ed25519Verify(key, sig, msg) {
    if (key.alg !== ED25519 || sig.alg !== ED25519) return false;
    if (toBig(sig.bytes.subarray(32), true) >= ED_L || ed25519PointStatus(sig.bytes.subarray(0, 32)) === 'weak') return false;
    try {
      const k = await subtle().importKey('raw', key.bytes, { name: 'Ed25519' }, false, ['verify']);
      return await subtle().verify({ name: 'Ed25519' }, k, sig.bytes, msg);
    } catch (e) {
      return false;
    }
  }

  // ------------------------------------------------------------------ Merkle proofs (§8, §9)

  // RFC 9162 §2.1.3.2, on BigInt so that indexes up to 2^32 survive the bit operations.
  async function verifyInclusion(leafData, index, size, path, root) {
    let fn = BigInt(index), sn = BigInt(size) - 1n;
    if (fn > sn) return false;
    let r = await H(Uint8Array.of(0), leafData);
    for (const p of path) {
      if (sn === 0n) return false;
      if ((fn & 1n) === 1n || fn === sn) {
        r = await H(Uint8Array.of(1), p, r);
        if ((fn & 1n) === 0n) while (fn !== 0n && (fn & 1n) === 0n) { fn >>= 1n; sn >>= 1n; }
      } else {
        r = await H(Uint8Array.of(1), r, p);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    return sn === 0n && equal(r, root);
  }

  const bit = (hash, d) => (hash[d >> 3] >> (7 - (d & 7))) & 1;

  // §9.1; every failure is "bad_proof", in the order of the reference's verify_state_proof.
  async function verifyState(keyHash, value, leafJson, siblingsHex, root) {
    const n = siblingsHex.length;
    if (n > 256) fail('bad_proof', 'too many siblings');
    const [leafKey, leafValue] = leafJson ? hashList('leaf', [leafJson.key_hash, leafJson.value_hash], 'bad_proof') : [];
    if (value) {
      if (!leafJson) fail('bad_proof', 'expected an inclusion proof');
      if (!equal(leafKey, keyHash)) fail('bad_proof', 'proof is for another key');
      if (!equal(leafValue, await H(value))) fail('bad_proof', 'value does not match the proof');
    } else if (leafJson) {
      if (equal(leafKey, keyHash)) fail('bad_proof', 'the key exists; absence cannot be proven');
      let common = 0;
      while (common < 256 && bit(leafKey, common) === bit(keyHash, common)) common++;
      if (common < n) fail('bad_proof', 'the proof\'s leaf is not on the key\'s path');
    }
    let cur = leafJson ? await H(JMT_LEAF, leafKey, leafValue) : JMT_PLACEHOLDER;
    const siblings = hashList('siblings', siblingsHex, 'bad_proof');
    for (let i = 0; i < n; i++) {
      cur = bit(keyHash, n - 1 - i) ? await H(JMT_INTERNAL, siblings[i], cur) : await H(JMT_INTERNAL, cur, siblings[i]);
    }
    if (!equal(cur, root)) fail('bad_proof', 'state root does not match');
  }

  // ------------------------------------------------------------------ bundle shape
  // What the reference's JSON parsing (serde) refuses before verification starts.

  const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const isCount = (v) => Number.isInteger(v) && v >= 0;
  const isHexList = (v) => Array.isArray(v) && v.every((s) => typeof s === 'string');
  const areStrings = (o, keys) => keys.every((k) => typeof o[k] === 'string');

  function shapeProblem(b) {
    if (!areStrings(b, ['chain_id', 'suite', 'header', 'commit', 'validator_set'])) {
      return 'chain_id, suite, header, commit and validator_set must be strings';
    }
    const c = b.claim;
    if (!isObject(c)) return 'claim is missing or not an object';
    if (c.kind === 'tx_inclusion') {
      if (!areStrings(c, ['tx', 'receipt'])) return 'claim.tx and claim.receipt must be hex strings';
      if (!isCount(c.index) || !isCount(c.tx_count)) return 'claim.index and claim.tx_count must be non-negative integers';
      if (!isHexList(c.path) || !isHexList(c.receipt_path)) return 'claim.path and claim.receipt_path must be lists of hex';
    } else if (c.kind === 'state') {
      if (!areStrings(c, ['contract', 'key'])) return 'claim.contract and claim.key must be strings';
      if (c.value != null && typeof c.value !== 'string') return 'claim.value must be hex or null';
      if (c.leaf != null && !(isObject(c.leaf) && areStrings(c.leaf, ['key_hash', 'value_hash']))) {
        return 'claim.leaf must be null or {key_hash, value_hash}';
      }
      if (!isHexList(c.siblings)) return 'claim.siblings must be a list of hex';
    } else {
      return 'unknown claim kind ' + JSON.stringify(c.kind);
    }
    return null;
  }

  // ------------------------------------------------------------------ verification (§12.2)

  async function checkHeader(b, ctx) {
    ctx.step = 'header';
    const header = decodeHex('header', b.header, decodeHeader);
    const h = header.value;
    if (h.chain_id !== b.chain_id) fail('wrong_chain', 'header chain id differs from the bundle\'s');
    if (h.prev_hash.alg !== SHA256 || h.state_root.alg !== SHA256) {
      fail('wrong_suite', 'header digests do not use the bundle\'s hash algorithm');
    }
    h.block_hash = { alg: SHA256, bytes: await H(header.bytes) };
    ctx.pass(`header decoded: chain ${h.chain_id}, height ${h.height}, block ${short(h.block_hash.bytes)}`);
    Object.assign(ctx.claim, {
      chain_id: h.chain_id, height: asNumber(h.height), time_ms: asNumber(h.time_ms), block_hash: toHex(h.block_hash.bytes),
    });
    return h;
  }

  function checkValidatorSet(b, trustedHex, ctx) {
    ctx.step = 'validator_set';
    const trusted = trustedHex != null && trustedHex !== '';
    ctx.claim.trusted = trusted;
    const set = decodeHex('validator set', b.validator_set, decodeValidatorSet);
    if (trusted) {
      const want = hexToBytes(String(trustedHex).trim());
      if (!want || !equal(want, set.bytes)) {
        fail('untrusted_validator_set', 'the block was signed by a validator set you do not trust');
      }
    }
    const n = set.value.validators.length;
    const count = n + (n === 1 ? ' validator' : ' validators');
    ctx.pass(trusted
      ? `validator set (${count}) is the trusted one`
      : `validator set (${count}) taken from the bundle itself, not compared with a trusted copy`, { trusted });
    return { bytes: set.bytes, validators: set.value.validators, total: set.value.total };
  }

  // §6.5, in the reference's order.
  async function checkCommit(b, h, set, ctx) {
    ctx.step = 'commit';
    const cert = decodeHex('commit', b.commit, decodeCommit).value;
    if (cert.height !== h.height) fail('bad_commit', 'certificate height does not match the header');
    if (!digestEq(cert.block_hash, h.block_hash)) fail('bad_commit', 'certificate is for a different block');
    if (!digestEq(h.validator_set_hash, { alg: SHA256, bytes: await H(set.bytes) })) {
      fail('bad_commit', 'header\'s validator set hash does not match the validator set');
    }
    const chain = enc.encode(b.chain_id);
    const msg = concat(TAG_PRECOMMIT, be(chain.length, 4), chain, be(cert.height, 8), be(cert.round, 4),
      Uint8Array.of(cert.block_hash.alg), cert.block_hash.bytes);
    const seen = new Set();
    let power = 0n;
    for (const { index, signature } of cert.signatures) {
      if (index >= set.validators.length) fail('bad_commit', `signer index ${index} is not in the validator set`);
      if (seen.has(index)) fail('bad_commit', `validator ${index} signed twice`);
      seen.add(index);
      if (!(await ed25519Verify(set.validators[index].key, signature, msg))) {
        fail('bad_commit', `signature of validator ${index} does not verify`);
      }
      power += set.validators[index].power;
    }
    if (power * 3n <= set.total * 2n) {
      fail('bad_commit', `signers hold ${power} of ${set.total} voting power; more than 2/3 is required`);
    }
    ctx.pass(`commit certificate: ${seen.size} of ${set.validators.length} validators signed, power ${power}/${set.total} > 2/3`);
    Object.assign(ctx.claim, { signed_power: asNumber(power), total_power: asNumber(set.total) });
    // The spec wants every id in the header to be the suite's. The reference checks two of them
    // (above) and the others only indirectly, so this can fail only for a validly signed header.
    if ([h.tx_root, h.receipt_root, h.validator_set_hash].some((d) => d.alg !== SHA256) || h.proposer.alg !== ED25519) {
      fail('wrong_suite', 'the header uses algorithms other than the bundle\'s suite');
    }
  }

  async function checkTxClaim(c, h, ctx) {
    ctx.step = 'transaction';
    const tx = decodeHex('tx', c.tx, decodeSignedTx);
    const body = tx.value.body;
    if (body.chain_id !== h.chain_id) fail('wrong_chain', 'transaction is for another chain');
    if (!(await ed25519Verify(body.sender, tx.value.signature, concat(TAG_TX, tx.value.bodyBytes)))) {
      fail('bad_signature', 'transaction signature: ' +
        (body.sender.alg === ED25519 ? 'signature does not verify' : 'the sender key is not an Ed25519 key'));
    }
    const txId = await H(tx.bytes);
    const sender = 'ed25519:' + toHex(body.sender.bytes);
    ctx.pass(`transaction ${body.contract}.${body.method} signed by ${sender.slice(0, 24)}…, id ${short(txId)}`);

    ctx.step = 'tx_inclusion';
    if (c.tx_count !== h.tx_count) fail('bad_proof', 'tx_count differs from the block header\'s');
    const path = hashList('path', c.path, 'malformed');
    if (!(await verifyInclusion(txId, c.index, c.tx_count, path, h.tx_root.bytes))) {
      fail('bad_proof', 'transaction is not in the block\'s tx_root');
    }
    ctx.pass(`transaction is leaf ${c.index} of ${c.tx_count} under tx_root ${short(h.tx_root.bytes)}`);

    ctx.step = 'receipt';
    const rc = decodeHex('receipt', c.receipt, decodeReceipt);
    if (!digestEq(rc.value.tx_id, { alg: SHA256, bytes: txId })) fail('bad_proof', 'receipt belongs to another transaction');
    const rpath = hashList('receipt_path', c.receipt_path, 'malformed');
    if (!(await verifyInclusion(rc.bytes, c.index, c.tx_count, rpath, h.receipt_root.bytes))) {
      fail('bad_proof', 'receipt is not in the block\'s receipt_root');
    }
    const { status, code } = rc.value;
    ctx.pass(`receipt under receipt_root ${short(h.receipt_root.bytes)}: outcome ${status === 'ok' ? 'ok' : `failed (${code})`}`);
    Object.assign(ctx.claim, {
      tx_id: toHex(txId), contract: body.contract, method: body.method, sender, status, code,
      index: c.index, tx_count: c.tx_count,
    });
  }

  async function checkStateClaim(c, h, ctx) {
    ctx.step = 'state';
    // The reference accepts only its contract-name alphabet (stricter than the spec's "no 0x00").
    if (!/^[a-z0-9_]{1,64}$/.test(c.contract)) fail('malformed', 'invalid contract name');
    const key = hexToBytes(c.key);
    if (!key) fail('malformed', 'key is not hex');
    const value = c.value == null ? null : hexToBytes(c.value);
    if (c.value != null && !value) fail('malformed', 'value is not hex');
    const keyHash = await H(enc.encode(c.contract), Uint8Array.of(0), key);
    await verifyState(keyHash, value, c.leaf, c.siblings, h.state_root.bytes);
    const where = `under state_root ${short(h.state_root.bytes)} (JMT): ${c.contract}/${printable(key)}`;
    ctx.pass(value ? `state value ${where} = ${printable(value)}` : `absence ${where} has no value`);
    Object.assign(ctx.claim, { contract: c.contract, key: c.key, value: value ? c.value : null, present: !!value });
  }

  // Text for people: the UTF-8 text when it is printable, else hex.
  function printable(b) {
    try {
      const s = utf8.decode(b);
      if (!/[\u0000-\u001f\u007f]/.test(s)) return s.length > 80 ? s.slice(0, 80) + '…' : s;
    } catch (e) { /* not text */ }
    return '0x' + (b.length > 40 ? toHex(b.subarray(0, 40)) + '…' : toHex(b));
  }

  async function verifyBundle(bundle, trustedValidatorSetHex) {
    const checks = [];
    const ctx = {
      step: 'format',
      claim: {},
      pass: (detail, extra) => checks.push({ step: ctx.step, ok: true, detail, ...extra }),
    };
    try {
      if (!isObject(bundle)) fail('malformed', 'the proof bundle is not a JSON object');
      if (bundle.format !== FORMAT) fail('unsupported_format', `expected ${FORMAT}, got ${JSON.stringify(bundle.format)}`);
      const problem = shapeProblem(bundle);
      if (problem) fail('malformed', problem);
      ctx.claim.kind = bundle.claim.kind;
      if (bundle.suite !== SUITE) {
        fail('unsupported_suite', `suite ${bundle.suite} cannot be checked in a browser (WebCrypto has no SM2/SM3); ` +
          'verify this bundle with the trellis command-line tool');
      }
      const missing = await webCryptoProblem();
      if (missing) fail('no_webcrypto', missing);
      ctx.pass(`format ${FORMAT}, suite ${SUITE}`);

      const h = await checkHeader(bundle, ctx);
      const set = checkValidatorSet(bundle, trustedValidatorSetHex, ctx);
      await checkCommit(bundle, h, set, ctx);
      if (bundle.claim.kind === 'tx_inclusion') await checkTxClaim(bundle.claim, h, ctx);
      else await checkStateClaim(bundle.claim, h, ctx);
      const message = ctx.claim.trusted
        ? 'proof verified against the trusted validator set'
        : 'proof verified, but only against the validator set carried in the bundle (no trusted set given)';
      return { ok: true, code: null, message, checks, claim: ctx.claim };
    } catch (e) {
      const err = e instanceof VerifyError ? e : new VerifyError('malformed', 'unexpected error: ' + (e && e.message));
      const failed = { step: ctx.step, ok: false, detail: `${err.code}: ${err.message}` };
      if (ctx.step === 'validator_set') failed.trusted = ctx.claim.trusted;
      checks.push(failed);
      return { ok: false, code: err.code, message: err.message, checks, claim: ctx.claim };
    }
  }

  globalThis.TrellisVerify = { verifyBundle };

  // ------------------------------------------------------------------ page binding

  const UNAVAILABLE = ['unsupported_suite', 'no_webcrypto'];
  const DEFAULT_LABELS = { ok: 'Proof verified', fail: 'Proof rejected', unavailable: 'This browser cannot verify the proof' };

  async function fetchBundle(url) {
    const res = await fetch(url, { headers: { Accept: 'application/json' }, credentials: 'same-origin' });
    if (!res.ok) throw new Error('HTTP ' + res.status);
    const json = await res.json();
    // The state endpoint wraps its bundle: {"value": …, "proof": {bundle}}.
    return isObject(json) && json.format === undefined && isObject(json.proof) ? json.proof : json;
  }

  function render(out, button, result) {
    const state = result.ok ? 'ok' : UNAVAILABLE.includes(result.code) ? 'unavailable' : 'fail';
    const head = document.createElement('p');
    head.className = result.ok ? 'verify-ok' : state === 'unavailable' ? 'verify-fail verify-unavailable' : 'verify-fail';
    head.textContent = button.getAttribute('data-label-' + state) || DEFAULT_LABELS[state];
    const note = document.createElement('p');
    note.className = 'verify-message';
    note.textContent = result.ok ? result.message : `${result.message} (${result.code})`;
    const list = document.createElement('ol');
    list.className = 'verify-checks';
    for (const c of result.checks) {
      const li = document.createElement('li');
      li.className = c.ok ? 'verify-step-ok' : 'verify-step-fail';
      li.textContent = (c.ok ? '✓ ' : '✗ ') + c.detail;
      list.appendChild(li);
    }
    out.replaceChildren(head, note, list);
    out.setAttribute('data-verify-result', state);
  }

  async function run(button) {
    const out = document.getElementById(button.getAttribute('data-verify-output') || '');
    if (!out || button.disabled) return;
    button.disabled = true;
    out.setAttribute('aria-busy', 'true');
    out.removeAttribute('data-verify-result');
    let result;
    try {
      const bundle = await fetchBundle(button.getAttribute('data-verify-url'));
      result = await verifyBundle(bundle, button.getAttribute('data-verify-trusted-set') || undefined);
    } catch (e) {
      const message = 'could not fetch the proof bundle: ' + (e && e.message);
      result = { ok: false, code: 'fetch_failed', message, checks: [{ step: 'fetch', ok: false, detail: message }], claim: {} };
    }
    try {
      render(out, button, result);
    } finally {
      out.setAttribute('aria-busy', 'false');
      button.disabled = false;
    }
  }

  function bindPage() {
    for (const button of document.querySelectorAll('button[data-verify-url]')) {
      button.addEventListener('click', (ev) => {
        ev.preventDefault();
        run(button);
      });
      // Pages whose point is the check (the consumer page) run it on load.
      if (button.hasAttribute('data-verify-auto')) run(button);
    }
  }

  if (typeof document !== 'undefined' && document) {
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', bindPage);
    else bindPage();
  }
})();
