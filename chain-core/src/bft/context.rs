//! Trellis types as Malachite sees them: the `Context` and everything it names.
//!
//! Values decided by consensus are block ids (header hashes); the blocks themselves travel as
//! proposal parts and live in the node. Votes are signed over Trellis's own domain-separated
//! bytes, and a precommit for a block is signed over exactly `CommitCertificate::
//! precommit_message`, so Malachite's commit certificate converts into the block's commit
//! certificate without a second signature.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use borsh::io::{Error as IoError, ErrorKind, Read, Write};
use borsh::{BorshDeserialize, BorshSerialize};
use malachitebft_app_channel::app::types::core::{
    self as mal, NilOrVal, Round, SignedExtension, SignedMessage, VoteType,
};

use crate::codec::Writer;
use crate::crypto::{Digest, HashAlg, PublicKey, SigAlg, Signature, SigningKey};
use crate::types::{self, CommitCertificate};

fn invalid(msg: impl Into<String>) -> IoError {
    IoError::new(ErrorKind::InvalidData, msg.into())
}

// ------------------------------------------------------------------------------- height

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl mal::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);
    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }
    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }
    fn as_u64(&self) -> u64 {
        self.0
    }
}

// ------------------------------------------------------------------------------- address

/// A validator is addressed by its consensus public key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub PublicKey);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_text())
    }
}

impl mal::Address for Address {}

impl BorshSerialize for Address {
    fn serialize<W: Write>(&self, w: &mut W) -> borsh::io::Result<()> {
        self.0.alg().id().serialize(w)?;
        self.0.as_bytes().to_vec().serialize(w)
    }
}

impl BorshDeserialize for Address {
    fn deserialize_reader<R: Read>(r: &mut R) -> borsh::io::Result<Self> {
        let alg =
            SigAlg::from_id(u8::deserialize_reader(r)?).map_err(|e| invalid(e.to_string()))?;
        let bytes = Vec::<u8>::deserialize_reader(r)?;
        PublicKey::from_bytes(alg, &bytes)
            .map(Address)
            .map_err(|e| invalid(e.to_string()))
    }
}

// ------------------------------------------------------------------------------- block id

/// The decided value: a block header hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockId(pub Digest);

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_hex())
    }
}

impl mal::Value for BlockId {
    type Id = BlockId;
    fn id(&self) -> BlockId {
        *self
    }
}

impl BorshSerialize for BlockId {
    fn serialize<W: Write>(&self, w: &mut W) -> borsh::io::Result<()> {
        self.0.alg.id().serialize(w)?;
        self.0.bytes.serialize(w)
    }
}

impl BorshDeserialize for BlockId {
    fn deserialize_reader<R: Read>(r: &mut R) -> borsh::io::Result<Self> {
        let alg =
            HashAlg::from_id(u8::deserialize_reader(r)?).map_err(|e| invalid(e.to_string()))?;
        let bytes = <[u8; 32]>::deserialize_reader(r)?;
        Ok(BlockId(Digest { alg, bytes }))
    }
}

// ------------------------------------------------------------------------------- signature

/// A signature with the total order Malachite requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sig(pub Signature);

impl Ord for Sig {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.0.alg, &self.0.bytes).cmp(&(other.0.alg, &other.0.bytes))
    }
}

impl PartialOrd for Sig {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl BorshSerialize for Sig {
    fn serialize<W: Write>(&self, w: &mut W) -> borsh::io::Result<()> {
        self.0.alg.id().serialize(w)?;
        self.0.bytes.serialize(w)
    }
}

impl BorshDeserialize for Sig {
    fn deserialize_reader<R: Read>(r: &mut R) -> borsh::io::Result<Self> {
        let alg =
            SigAlg::from_id(u8::deserialize_reader(r)?).map_err(|e| invalid(e.to_string()))?;
        let bytes = Vec::<u8>::deserialize_reader(r)?;
        Signature::new(alg, bytes)
            .map(Sig)
            .map_err(|e| invalid(e.to_string()))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheme;

impl mal::SigningScheme for Scheme {
    type DecodingError = String;
    type Signature = Sig;
    type PublicKey = PublicKey;
    type PrivateKey = Arc<SigningKey>;

    fn decode_signature(bytes: &[u8]) -> Result<Sig, String> {
        let (alg, rest) = bytes.split_first().ok_or("empty signature")?;
        let alg = SigAlg::from_id(*alg).map_err(|e| e.to_string())?;
        Signature::new(alg, rest.to_vec())
            .map(Sig)
            .map_err(|e| e.to_string())
    }

    fn encode_signature(sig: &Sig) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + sig.0.bytes.len());
        out.push(sig.0.alg.id());
        out.extend_from_slice(&sig.0.bytes);
        out
    }
}

// ------------------------------------------------------------------------------- votes

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, BorshSerialize, BorshDeserialize)]
pub struct Vote {
    pub typ: VoteType,
    pub height: Height,
    pub round: Round,
    pub value: NilOrVal<BlockId>,
    pub validator: Address,
    pub extension: Option<SignedExtension<Ctx>>,
}

impl mal::Vote<Ctx> for Vote {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &NilOrVal<BlockId> {
        &self.value
    }
    fn take_value(self) -> NilOrVal<BlockId> {
        self.value
    }
    fn vote_type(&self) -> VoteType {
        self.typ
    }
    fn validator_address(&self) -> &Address {
        &self.validator
    }
    fn extension(&self) -> Option<&SignedExtension<Ctx>> {
        self.extension.as_ref()
    }
    fn take_extension(&mut self) -> Option<SignedExtension<Ctx>> {
        self.extension.take()
    }
    fn extend(self, extension: SignedExtension<Ctx>) -> Self {
        Self {
            extension: Some(extension),
            ..self
        }
    }
}

// ------------------------------------------------------------------------------- proposals

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Proposal {
    pub height: Height,
    pub round: Round,
    pub value: BlockId,
    pub pol_round: Round,
    pub proposer: Address,
}

impl mal::Proposal<Ctx> for Proposal {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &BlockId {
        &self.value
    }
    fn take_value(self) -> BlockId {
        self.value
    }
    fn pol_round(&self) -> Round {
        self.pol_round
    }
    fn validator_address(&self) -> &Address {
        &self.proposer
    }
}

/// A proposed block travels as `Init`, one or more `Data` chunks of the encoded block, and `Fin`
/// carrying the proposer's signature over (height, round, pol_round, block id).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum ProposalPart {
    Init {
        height: Height,
        round: Round,
        pol_round: Round,
        proposer: Address,
    },
    Data(Vec<u8>),
    Fin {
        signature: Sig,
    },
}

impl mal::ProposalPart<Ctx> for ProposalPart {
    fn is_first(&self) -> bool {
        matches!(self, ProposalPart::Init { .. })
    }
    fn is_last(&self) -> bool {
        matches!(self, ProposalPart::Fin { .. })
    }
}

// ------------------------------------------------------------------------------- validators

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    pub address: Address,
    pub power: u64,
}

impl mal::Validator<Ctx> for Validator {
    fn address(&self) -> &Address {
        &self.address
    }
    fn public_key(&self) -> &PublicKey {
        &self.address.0
    }
    fn voting_power(&self) -> u64 {
        self.power
    }
}

/// The chain's canonical validator set (sorted by key), so an index here is the
/// `validator_index` of the block's commit certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    pub validators: Vec<Validator>,
    total: u64,
}

impl ValidatorSet {
    pub fn from_chain(set: &types::ValidatorSet) -> Self {
        let validators: Vec<Validator> = set
            .validators()
            .iter()
            .map(|v| Validator {
                address: Address(v.public_key.clone()),
                power: v.power,
            })
            .collect();
        Self {
            total: validators.iter().map(|v| v.power).sum(),
            validators,
        }
    }

    pub fn index_of(&self, address: &Address) -> Option<usize> {
        self.validators.iter().position(|v| &v.address == address)
    }
}

impl mal::ValidatorSet<Ctx> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }
    fn total_voting_power(&self) -> u64 {
        self.total
    }
    fn get_by_address(&self, address: &Address) -> Option<&Validator> {
        self.validators.iter().find(|v| &v.address == address)
    }
    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

// ------------------------------------------------------------------------------- context

#[derive(Clone, Debug)]
pub struct Ctx {
    pub chain_id: Arc<str>,
}

impl Ctx {
    pub fn new(chain_id: &str) -> Self {
        Self {
            chain_id: chain_id.into(),
        }
    }
}

/// Proposer of (height, round): a position on the ring of voting power that advances by one
/// validator-power unit per height and round, so each validator proposes in proportion to its
/// power and a failed round moves to the next validator.
pub fn proposer_index(set: &ValidatorSet, height: u64, round: u32) -> usize {
    let n = set.validators.len().max(1) as u64;
    // Equal powers (the common case) give plain round robin.
    let all_equal = set.validators.windows(2).all(|w| w[0].power == w[1].power);
    if all_equal {
        return ((height.wrapping_add(u64::from(round))) % n) as usize;
    }
    let total = set.total.max(1);
    let mut point = height
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(round).wrapping_mul(total / n + 1))
        % total;
    for (i, v) in set.validators.iter().enumerate() {
        if point < v.power {
            return i;
        }
        point -= v.power;
    }
    0
}

impl mal::Context for Ctx {
    type Address = Address;
    type Height = Height;
    type ProposalPart = ProposalPart;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Value = BlockId;
    type Vote = Vote;
    type Extension = ();
    type SigningScheme = Scheme;

    fn select_proposer<'a>(
        &self,
        set: &'a ValidatorSet,
        height: Height,
        round: Round,
    ) -> &'a Validator {
        let r = round.as_u32().unwrap_or(0);
        // Malachite never starts a height with an empty set (StartHeight fails first).
        &set.validators[proposer_index(set, height.0, r)]
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: BlockId,
        pol_round: Round,
        address: Address,
    ) -> Proposal {
        Proposal {
            height,
            round,
            value,
            pol_round,
            proposer: address,
        }
    }

    fn new_prevote(
        &self,
        height: Height,
        round: Round,
        value: NilOrVal<BlockId>,
        address: Address,
    ) -> Vote {
        Vote {
            typ: VoteType::Prevote,
            height,
            round,
            value,
            validator: address,
            extension: None,
        }
    }

    fn new_precommit(
        &self,
        height: Height,
        round: Round,
        value: NilOrVal<BlockId>,
        address: Address,
    ) -> Vote {
        Vote {
            typ: VoteType::Precommit,
            height,
            round,
            value,
            validator: address,
            extension: None,
        }
    }
}

// ------------------------------------------------------------------------------- signing

const PREVOTE_DOMAIN: &[u8] = b"trellis/prevote/v1\0";
const NIL_PRECOMMIT_DOMAIN: &[u8] = b"trellis/precommit-nil/v1\0";
const PROPOSAL_DOMAIN: &[u8] = b"trellis/proposal/v1\0";

fn round_u32(r: Round) -> u32 {
    r.as_u32().unwrap_or(u32::MAX)
}

/// The bytes a validator signs for a vote: a pure function of (type, height, round, value), so
/// certificates can be re-checked by rebuilding the vote. A precommit for a block is exactly the
/// block's commit-certificate message; prevotes and nil precommits use their own domains.
pub fn vote_sign_bytes(chain_id: &str, vote: &Vote) -> Vec<u8> {
    let round = round_u32(vote.round);
    match (vote.typ, &vote.value) {
        (VoteType::Precommit, NilOrVal::Val(id)) => {
            CommitCertificate::precommit_message(chain_id, vote.height.0, round, &id.0)
        }
        (VoteType::Precommit, NilOrVal::Nil) => {
            let mut w = Writer::with_capacity(64);
            w.raw(NIL_PRECOMMIT_DOMAIN)
                .str(chain_id)
                .u64(vote.height.0)
                .u32(round);
            w.finish()
        }
        (VoteType::Prevote, value) => {
            let mut w = Writer::with_capacity(96);
            w.raw(PREVOTE_DOMAIN)
                .str(chain_id)
                .u64(vote.height.0)
                .u32(round);
            match value {
                NilOrVal::Nil => {
                    w.u8(0);
                }
                NilOrVal::Val(id) => {
                    w.u8(1).digest(&id.0);
                }
            }
            w.finish()
        }
    }
}

/// The bytes a proposer signs for its proposal (also carried in the `Fin` part).
pub fn proposal_sign_bytes(
    chain_id: &str,
    height: u64,
    round: Round,
    pol_round: Round,
    id: &BlockId,
) -> Vec<u8> {
    let mut w = Writer::with_capacity(96);
    w.raw(PROPOSAL_DOMAIN)
        .str(chain_id)
        .u64(height)
        .u32(round_u32(round))
        .u32(round_u32(pol_round))
        .digest(&id.0);
    w.finish()
}

/// Signs and verifies consensus messages with the node's validator key.
pub struct Signer {
    pub key: Arc<SigningKey>,
    pub chain_id: Arc<str>,
}

impl mal::SigningProvider<Ctx> for Signer {
    fn sign_vote(&self, vote: Vote) -> SignedMessage<Ctx, Vote> {
        let sig = self.key.sign(&vote_sign_bytes(&self.chain_id, &vote));
        SignedMessage::new(vote, Sig(sig))
    }

    fn verify_signed_vote(&self, vote: &Vote, sig: &Sig, key: &PublicKey) -> bool {
        key.verify(&vote_sign_bytes(&self.chain_id, vote), &sig.0)
            .is_ok()
    }

    fn sign_proposal(&self, p: Proposal) -> SignedMessage<Ctx, Proposal> {
        let msg = proposal_sign_bytes(&self.chain_id, p.height.0, p.round, p.pol_round, &p.value);
        let sig = self.key.sign(&msg);
        SignedMessage::new(p, Sig(sig))
    }

    fn verify_signed_proposal(&self, p: &Proposal, sig: &Sig, key: &PublicKey) -> bool {
        let msg = proposal_sign_bytes(&self.chain_id, p.height.0, p.round, p.pol_round, &p.value);
        key.verify(&msg, &sig.0).is_ok()
    }

    fn sign_proposal_part(&self, part: ProposalPart) -> SignedMessage<Ctx, ProposalPart> {
        let sig = self.key.sign(&part_sign_bytes(&self.chain_id, &part));
        SignedMessage::new(part, Sig(sig))
    }

    fn verify_signed_proposal_part(&self, part: &ProposalPart, sig: &Sig, key: &PublicKey) -> bool {
        key.verify(&part_sign_bytes(&self.chain_id, part), &sig.0)
            .is_ok()
    }

    fn sign_vote_extension(&self, ext: ()) -> SignedMessage<Ctx, ()> {
        let mut w = Writer::with_capacity(48);
        w.raw(b"trellis/vote-extension/v1\0").str(&self.chain_id);
        SignedMessage::new(ext, Sig(self.key.sign(&w.finish())))
    }

    fn verify_signed_vote_extension(&self, _ext: &(), sig: &Sig, key: &PublicKey) -> bool {
        let mut w = Writer::with_capacity(48);
        w.raw(b"trellis/vote-extension/v1\0").str(&self.chain_id);
        key.verify(&w.finish(), &sig.0).is_ok()
    }
}

fn part_sign_bytes(chain_id: &str, part: &ProposalPart) -> Vec<u8> {
    let mut w = Writer::with_capacity(64);
    w.raw(b"trellis/proposal-part/v1\0").str(chain_id);
    // Parts are authenticated through the Fin signature; this binds a part's full encoding.
    let body = borsh::to_vec(part).unwrap_or_default();
    w.bytes(&body);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Suite;
    use malachitebft_app_channel::app::types::SignedConsensusMsg;
    use malachitebft_app_channel::app::types::codec::Codec;
    use malachitebft_app_channel::app::types::core::{SignedMessage, SigningProvider};
    use malachitebft_app_channel::app::types::streaming::{StreamId, StreamMessage};
    use proptest::prelude::*;

    fn signer(chain: &str, seed: &str) -> Signer {
        Signer {
            key: Arc::new(SigningKey::from_label(Suite::Ed25519Sha256.sig(), seed)),
            chain_id: chain.into(),
        }
    }

    fn block_id(b: u8) -> BlockId {
        BlockId(Digest {
            alg: HashAlg::Sha256,
            bytes: [b; 32],
        })
    }

    fn vote(ctx: &Ctx, typ: VoteType, h: u64, r: u32, v: NilOrVal<BlockId>, s: &Signer) -> Vote {
        let addr = Address(s.key.public_key());
        match typ {
            VoteType::Prevote => mal::Context::new_prevote(ctx, Height(h), Round::new(r), v, addr),
            VoteType::Precommit => {
                mal::Context::new_precommit(ctx, Height(h), Round::new(r), v, addr)
            }
        }
    }

    #[test]
    fn a_block_precommit_signs_exactly_the_commit_certificate_message() {
        let ctx = Ctx::new("c1");
        let s = signer("c1", "v1");
        let v = vote(
            &ctx,
            VoteType::Precommit,
            7,
            2,
            NilOrVal::Val(block_id(9)),
            &s,
        );
        assert_eq!(
            vote_sign_bytes("c1", &v),
            CommitCertificate::precommit_message("c1", 7, 2, &block_id(9).0)
        );
    }

    #[test]
    fn wrong_chain_replayed_and_cross_type_votes_do_not_verify() {
        let ctx = Ctx::new("c1");
        let s = signer("c1", "v1");
        let other_chain = signer("c2", "v1");
        let pk = s.key.public_key();
        let v = vote(
            &ctx,
            VoteType::Precommit,
            7,
            0,
            NilOrVal::Val(block_id(1)),
            &s,
        );
        let signed: SignedMessage<Ctx, Vote> = s.sign_vote(v.clone());
        assert!(s.verify_signed_vote(&v, &signed.signature, &pk));
        // Another chain's node does not accept it.
        assert!(!other_chain.verify_signed_vote(&v, &signed.signature, &pk));
        // Replayed at another height or round, or for another block: refused.
        for other in [
            vote(
                &ctx,
                VoteType::Precommit,
                8,
                0,
                NilOrVal::Val(block_id(1)),
                &s,
            ),
            vote(
                &ctx,
                VoteType::Precommit,
                7,
                1,
                NilOrVal::Val(block_id(1)),
                &s,
            ),
            vote(
                &ctx,
                VoteType::Precommit,
                7,
                0,
                NilOrVal::Val(block_id(2)),
                &s,
            ),
            vote(&ctx, VoteType::Precommit, 7, 0, NilOrVal::Nil, &s),
            // A precommit signature is not a prevote signature.
            vote(
                &ctx,
                VoteType::Prevote,
                7,
                0,
                NilOrVal::Val(block_id(1)),
                &s,
            ),
        ] {
            assert!(
                !s.verify_signed_vote(&other, &signed.signature, &pk),
                "{other:?}"
            );
        }
        // Someone else's key does not verify.
        let stranger = signer("c1", "v2");
        assert!(!s.verify_signed_vote(&v, &signed.signature, &stranger.key.public_key()));
    }

    #[test]
    fn proposer_rotation_is_deterministic_and_follows_power() {
        let keys: Vec<PublicKey> = (0..4)
            .map(|i| {
                SigningKey::from_label(Suite::Ed25519Sha256.sig(), &format!("p{i}")).public_key()
            })
            .collect();
        let equal = types::ValidatorSet::new(
            keys.iter()
                .map(|k| types::Validator {
                    public_key: k.clone(),
                    power: 1,
                })
                .collect(),
        )
        .expect("set");
        let set = ValidatorSet::from_chain(&equal);
        let picks: Vec<usize> = (1..=8).map(|h| proposer_index(&set, h, 0)).collect();
        assert_eq!(picks, vec![1, 2, 3, 0, 1, 2, 3, 0]);
        // A failed round moves to another validator.
        assert_ne!(proposer_index(&set, 5, 0), proposer_index(&set, 5, 1));
        let weighted = types::ValidatorSet::new(
            keys.iter()
                .enumerate()
                .map(|(i, k)| types::Validator {
                    public_key: k.clone(),
                    power: if i == 0 { 7 } else { 1 },
                })
                .collect(),
        )
        .expect("set");
        let wset = ValidatorSet::from_chain(&weighted);
        let heavy = wset.index_of(&Address(keys[0].clone())).expect("present");
        let n = (0..10_000u64)
            .filter(|h| proposer_index(&wset, *h, 0) == heavy)
            .count();
        // 7 of 10 power: about 70 % of heights.
        assert!(
            (6_000..8_000).contains(&n),
            "heavy validator proposed {n} of 10000"
        );
    }

    #[test]
    fn consensus_messages_round_trip_through_the_codec() {
        let ctx = Ctx::new("c1");
        let s = signer("c1", "v1");
        let v = vote(
            &ctx,
            VoteType::Prevote,
            3,
            1,
            NilOrVal::Val(block_id(4)),
            &s,
        );
        let msg = SignedConsensusMsg::Vote(s.sign_vote(v));
        let bytes = Codec::<SignedConsensusMsg<Ctx>>::encode(&super::super::codec::MalCodec, &msg)
            .expect("encode");
        let back: SignedConsensusMsg<Ctx> =
            Codec::decode(&super::super::codec::MalCodec, bytes).expect("decode");
        assert_eq!(back, msg);
    }

    proptest! {
        /// Malformed network input is an error, never a panic.
        #[test]
        fn random_bytes_never_panic_the_decoder(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let codec = super::super::codec::MalCodec;
            let b = bytes::Bytes::from(data);
            let _ = Codec::<SignedConsensusMsg<Ctx>>::decode(&codec, b.clone());
            let _ = Codec::<StreamMessage<ProposalPart>>::decode(&codec, b.clone());
            let _ = Codec::<ProposalPart>::decode(&codec, b);
            let _ = StreamId::new(bytes::Bytes::new());
        }
    }
}
