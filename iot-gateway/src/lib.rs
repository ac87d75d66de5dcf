//! Trellis IoT gateway: devices registered on chain (`contract`), their signed messages
//! (`payload`, docs/spec/iot.md) and the batch verification of what arrives over MQTT
//! (`verify`). MQTT ingestion, batching and anchoring, the durable outbox and the simulator
//! build on these (issue 6, in progress).

pub mod contract;
pub mod payload;
pub mod verify;

#[cfg(test)]
mod contract_tests;
