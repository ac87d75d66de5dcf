//! Trellis IoT gateway: devices registered on chain (`contract`), their signed messages
//! (`payload`, docs/spec/iot.md), the batch verification of what arrives over MQTT (`verify`)
//! and the batches whose Merkle roots are anchored, with a proof per reading (`batch`); the
//! pipeline over them (`gateway`: durable outbox, batching, anchoring, lot reports, scan
//! events), MQTT ingestion and the embedded broker (`mqtt`) with its durable inbox (`inbox`),
//! metrics (`metrics`) and the device simulator (`sim`).

pub mod batch;
pub mod contract;
pub mod gateway;
pub mod inbox;
pub mod metrics;
pub mod mqtt;
pub mod payload;
pub mod sim;
pub mod store;
pub mod verify;

#[cfg(test)]
mod contract_tests;
