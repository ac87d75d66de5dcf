//! Trellis IoT gateway: devices registered on chain (`contract`), their signed messages
//! (`payload`, docs/spec/iot.md), the batch verification of what arrives over MQTT (`verify`)
//! and the batches whose Merkle roots are anchored, with a proof per reading (`batch`). MQTT
//! ingestion, the durable outbox, the anchoring loop and the simulator build on these (issue 6,
//! in progress).

pub mod batch;
pub mod contract;
pub mod gateway;
pub mod mqtt;
pub mod payload;
pub mod sim;
pub mod store;
pub mod verify;

#[cfg(test)]
mod contract_tests;
