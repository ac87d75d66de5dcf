//! Trellis web shell, rendered on the server with Leptos (SSR only: no hydration, no wasm).
//!
//! - `components`: the shared pieces every app's pages are made of (shell, tables with paging
//!   and sorting, forms with field errors, badges, hashes with copy, timeline, SVG charts, QR,
//!   empty/loading/error states).
//! - `i18n`: the zh-CN / English catalogue.
//! - `assets`: one stylesheet and two small scripts (`app.js`: copy buttons and live blocks;
//!   `verify.js`: proof bundles checked in the browser with WebCrypto).
//! - `auth`: web users, password sign-in, sessions, CSRF, rate limiting, custodial signing.
//! - `web`: request context, security headers, sign-in, language switch, router.
//! - `explorer`, `admin`: the first pages.

// Page handlers return a ready error page (`Response`) as their `Err`: it is built once per
// failed request, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod assets;
pub mod auth;
pub mod components;
pub mod explorer;
pub mod i18n;
pub mod web;
