//! End-to-end tests: real nodes, real databases (SQLite, or PostgreSQL via
//! TRELLIS_TEST_DATABASE_URL), real HTTP. One test binary for the whole workspace.

mod api;
mod bft;
mod cli;
mod common;
mod crash;
mod governance;
mod interop;
mod iot;
mod trace;
mod web;
