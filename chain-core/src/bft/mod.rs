//! Multi-validator consensus: the Malachite BFT engine behind the `ConsensusEngine` boundary.
//! The block and commit formats are the same as with the single-validator engine.

pub mod codec;
pub mod context;
pub mod engine;

pub use engine::{BftEngine, BftSettings};
