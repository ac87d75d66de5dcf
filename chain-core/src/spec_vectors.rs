//! The worked example of docs/spec/encoding.md §13, checked against this implementation, so the
//! document and the code cannot drift apart.

use crate::crypto::{HashAlg, SigAlg, SigningKey};
use crate::merkle;
use crate::types::{SignedTx, TxBody};

#[test]
fn spec_worked_example_transaction() {
    let seed =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
    let key = SigningKey::from_seed(SigAlg::Ed25519, &seed).unwrap();
    assert_eq!(
        key.public_key().to_text(),
        "ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
    let body = TxBody {
        chain_id: "trellis-example".into(),
        sender: key.public_key(),
        nonce: 0,
        expiry_ms: 1_700_000_060_000,
        contract: "notary".into(),
        method: "anchor".into(),
        args: br#"{"key":"example","hash":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}"#.to_vec(),
    };
    assert_eq!(body.encode().len(), 188);
    let tx = body.sign(&key, HashAlg::Sha256);
    assert_eq!(tx.bytes().len(), 261);
    assert_eq!(
        hex::encode(&tx.signature.bytes),
        "ce5a5fbe347509b88c63b6200eb1d5efd97f21c667bb6902f5d919904464cccbd5c4096322191bfae1be1eb1198c7dcd81cde09aac2e6945a90e6c5fd0329309"
    );
    assert_eq!(
        tx.id().to_hex(),
        "5c89f25a276701d7ba6c921637f8f50ad74d4c729b05ebb32c3f52a139963f98"
    );
    assert_eq!(
        key.public_key().did(),
        "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw"
    );
    let back = SignedTx::decode(tx.bytes(), HashAlg::Sha256).unwrap();
    assert_eq!(back.id(), tx.id());
    back.verify_signature().unwrap();
}

#[test]
fn spec_rfc9162_tree_vectors() {
    let leaves: Vec<Vec<u8>> = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|h| hex::decode(h).unwrap())
    .collect();
    assert_eq!(
        merkle::root(HashAlg::Sha256, &leaves[..1]).to_hex(),
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    );
    assert_eq!(
        merkle::root(HashAlg::Sha256, &leaves).to_hex(),
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    );
}
