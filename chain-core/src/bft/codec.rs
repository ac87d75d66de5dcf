//! Wire and write-ahead-log encoding of consensus messages: borsh, which Malachite's types
//! support natively and ours implement (see `context`). Input comes from the network, so
//! decoding never panics; oversized messages are refused by the network layer first.

use borsh::{BorshDeserialize, BorshSerialize};
use bytes::Bytes;
use malachitebft_app_channel::app::types::codec::Codec;

#[derive(Clone, Copy, Debug, Default)]
pub struct MalCodec;

impl<T> Codec<T> for MalCodec
where
    T: BorshSerialize + BorshDeserialize,
{
    type Error = std::io::Error;

    fn decode(&self, bytes: Bytes) -> Result<T, Self::Error> {
        borsh::from_slice(&bytes)
    }

    fn encode(&self, msg: &T) -> Result<Bytes, Self::Error> {
        borsh::to_vec(msg).map(Bytes::from)
    }
}
