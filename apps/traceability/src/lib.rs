//! Trellis traceability: GS1 identifiers and Digital Link, EPCIS 2.0 capture and query anchored
//! on chain through the `trace` contract, its read models, and the consumer and enterprise pages.
//!
//! - `gs1`, `digital_link`: identifiers with check digits, EPC URIs, Digital Link URIs.
//! - `epcis`: CBV 2.0 event hash IDs, schema validation, the standard query parameters.
//! - `domain`, `contract`, `ids`: the on-chain records and the `trace` contract's rules.
//! - `store`, `indexer`: the read model kept in step with committed blocks.
//! - `epcis_api`: the EPCIS 2.0 REST binding (`/epcis/…`).
//! - `consumer`, `scans`: the Digital Link resolver page and the counterfeit rule.
//! - `pages`, `graph`, `labels`: enterprise pages, trace graphs, QR codes and label sheets.
//! - `demo`: the seeded dairy supply chain.

// Page handlers return a ready error page (`Response`) as their `Err`.
#![allow(clippy::result_large_err)]

pub mod app;
pub mod consumer;
pub mod contract;
pub mod demo;
pub mod digital_link;
pub mod domain;
pub mod epcis;
pub mod epcis_api;
pub mod graph;
pub mod gs1;
pub mod ids;
pub mod indexer;
pub mod labels;
pub mod pages;
pub mod scans;
pub mod store;

#[cfg(test)]
mod contract_tests;

/// All traceability routes (EPCIS REST binding, Digital Link resolver, enterprise pages), for
/// the web shell's router.
pub fn routes(app: app::TraceShared) -> axum::Router<frontend::web::Shared> {
    epcis_api::routes()
        .merge(pages::routes())
        .route("/01/{*rest}", axum::routing::get(consumer::resolve))
        .layer(axum::Extension(app))
}
