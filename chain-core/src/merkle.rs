//! Binary Merkle trees over ordered lists (transactions, receipts), exactly as RFC 9162 §2.1
//! (Certificate Transparency v2): leaf = H(0x00 || data), node = H(0x01 || left || right),
//! split at the largest power of two smaller than n, empty tree = H("").

use crate::crypto::{Digest, HashAlg};

pub fn leaf_hash(alg: HashAlg, data: &[u8]) -> [u8; 32] {
    alg.digest_parts(&[&[0u8], data]).bytes
}

fn node_hash(alg: HashAlg, l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    alg.digest_parts(&[&[1u8], l, r]).bytes
}

fn split_point(n: usize) -> usize {
    // largest power of two strictly smaller than n (n >= 2)
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

fn root_of_leaves(alg: HashAlg, leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => alg.digest(b"").bytes,
        1 => leaves[0],
        n => {
            let k = split_point(n);
            let l = root_of_leaves(alg, &leaves[..k]);
            let r = root_of_leaves(alg, &leaves[k..]);
            node_hash(alg, &l, &r)
        }
    }
}

/// Root over the given leaf data items.
pub fn root<T: AsRef<[u8]>>(alg: HashAlg, items: &[T]) -> Digest {
    let leaves: Vec<[u8; 32]> = items.iter().map(|d| leaf_hash(alg, d.as_ref())).collect();
    Digest {
        alg,
        bytes: root_of_leaves(alg, &leaves),
    }
}

/// Audit path for leaf `index` (RFC 9162 §2.1.3.1), siblings from the bottom up.
pub fn inclusion_path<T: AsRef<[u8]>>(
    alg: HashAlg,
    items: &[T],
    index: usize,
) -> Option<Vec<[u8; 32]>> {
    if index >= items.len() {
        return None;
    }
    let leaves: Vec<[u8; 32]> = items.iter().map(|d| leaf_hash(alg, d.as_ref())).collect();
    let mut path = Vec::new();
    path_rec(alg, &leaves, index, &mut path);
    Some(path)
}

fn path_rec(alg: HashAlg, leaves: &[[u8; 32]], m: usize, out: &mut Vec<[u8; 32]>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if m < k {
        path_rec(alg, &leaves[..k], m, out);
        out.push(root_of_leaves(alg, &leaves[k..]));
    } else {
        path_rec(alg, &leaves[k..], m - k, out);
        out.push(root_of_leaves(alg, &leaves[..k]));
    }
}

/// RFC 9162 §2.1.3.2 inclusion verification.
pub fn verify_inclusion(
    alg: HashAlg,
    leaf_data: &[u8],
    index: u64,
    tree_size: u64,
    path: &[[u8; 32]],
    root: &[u8; 32],
) -> bool {
    if index >= tree_size {
        return false;
    }
    let (mut fn_, mut sn) = (index, tree_size - 1);
    let mut r = leaf_hash(alg, leaf_data);
    for p in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(alg, p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(alg, &r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && &r == root
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_leaf_proves_and_tampering_fails(n in 1usize..70, pick in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()) {
            let items: Vec<Vec<u8>> = (0..n).map(|i| format!("item-{i}").into_bytes()).collect();
            let r = root(HashAlg::Sha256, &items);
            let i = pick.index(n);
            let path = inclusion_path(HashAlg::Sha256, &items, i).unwrap();
            prop_assert!(verify_inclusion(HashAlg::Sha256, &items[i], i as u64, n as u64, &path, &r.bytes));
            // wrong index, wrong data, wrong size all fail
            prop_assert!(!verify_inclusion(HashAlg::Sha256, b"other", i as u64, n as u64, &path, &r.bytes));
            if n > 1 {
                prop_assert!(!verify_inclusion(HashAlg::Sha256, &items[i], ((i + 1) % n) as u64, n as u64, &path, &r.bytes));
            }
            if !path.is_empty() {
                let mut bad = path.clone();
                let j = flip.index(bad.len());
                bad[j][7] ^= 0x10;
                prop_assert!(!verify_inclusion(HashAlg::Sha256, &items[i], i as u64, n as u64, &bad, &r.bytes));
            }
        }
    }

    #[test]
    fn empty_and_single() {
        let e: Vec<Vec<u8>> = vec![];
        assert_eq!(root(HashAlg::Sha256, &e), HashAlg::Sha256.digest(b""));
        let one = vec![b"a".to_vec()];
        assert_eq!(
            root(HashAlg::Sha256, &one).bytes,
            leaf_hash(HashAlg::Sha256, b"a")
        );
    }
}
