//! EPCIS 2.0: event hash IDs (CBV 2.0), validation against the official JSON Schema and CBV
//! vocabularies, and the standard query parameters.

pub mod hash;
pub mod query;
pub mod validate;
