//! Chain explorer: latest blocks (live) and transactions, block, transaction, account and state
//! pages, search, and in-browser verification of proof bundles.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chain_core::crypto::{Digest, PublicKey, Suite};
use chain_core::node::decode_block_row;
use chain_core::storage::entities::tx as tx_row;
use chain_core::types::{Receipt, SignedTx, TxStatus};
use leptos::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use crate::components::*;
use crate::i18n::t;
use crate::web::{Shared, Viewer};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/explorer", get(overview))
        .route("/explorer/blocks", get(blocks))
        .route("/explorer/blocks/{id}", get(block))
        .route("/explorer/txs", get(txs))
        .route("/explorer/txs/{id}", get(tx))
        .route("/explorer/accounts/{key}", get(account))
        .route("/explorer/state", get(state))
        .route("/explorer/search", get(search))
}

const PER_PAGE: u64 = 25;

fn internal(v: &Viewer, e: impl std::fmt::Display) -> Response {
    tracing::error!("explorer: {e}");
    v.error(StatusCode::INTERNAL_SERVER_ERROR, "state.error", None)
}

fn not_found(v: &Viewer) -> Response {
    v.error(StatusCode::NOT_FOUND, "state.not_found", None)
}

fn status_badge(ok: bool) -> AnyView {
    if ok {
        view! { <Badge tone=Tone::Ok label=t("status.ok")/> }.into_any()
    } else {
        view! { <Badge tone=Tone::Bad label=t("status.failed")/> }.into_any()
    }
}

fn block_link(h: i64) -> AnyView {
    view! { <a href=format!("/explorer/blocks/{h}")>{h}</a> }.into_any()
}

fn tx_link(id: &[u8]) -> AnyView {
    let hex = hex::encode(id);
    view! { <HashText value=hex.clone() href=format!("/explorer/txs/{hex}")/> }.into_any()
}

fn account_link(key: &str) -> AnyView {
    view! { <HashText value=key.to_string() href=format!("/explorer/accounts/{key}")/> }.into_any()
}

fn text(s: impl Into<String>) -> AnyView {
    let s: String = s.into();
    view! { <span>{s}</span> }.into_any()
}

fn code(s: impl Into<String>) -> AnyView {
    let s: String = s.into();
    view! { <code>{s}</code> }.into_any()
}

/// Rows of a transactions table.
fn tx_rows(rows: &[tx_row::Model]) -> Vec<Vec<AnyView>> {
    rows.iter()
        .map(|r| {
            vec![
                tx_link(&r.id),
                block_link(r.height),
                account_link(&r.sender),
                code(format!("{}.{}", r.contract, r.method)),
                status_badge(r.ok),
            ]
        })
        .collect()
}

fn tx_cols() -> Vec<Col> {
    vec![
        Col::new("explorer.hash"),
        Col::new("explorer.block").numeric(),
        Col::new("explorer.sender"),
        Col::new("explorer.method"),
        Col::new("explorer.result"),
    ]
}

fn block_cols() -> Vec<Col> {
    vec![
        Col::new("explorer.height").sortable("height").numeric(),
        Col::new("explorer.hash"),
        Col::new("explorer.time"),
        Col::new("explorer.tx_count").numeric(),
    ]
}

fn block_rows(rows: &[chain_core::storage::entities::block::Model]) -> Vec<Vec<AnyView>> {
    rows.iter()
        .map(|b| {
            let hex = hex::encode(&b.hash);
            vec![
                block_link(b.height),
                view! { <HashText value=hex href=format!("/explorer/blocks/{}", b.height)/> }
                    .into_any(),
                text(format_time(b.time_ms.max(0) as u64)),
                text(b.tx_count.to_string()),
            ]
        })
        .collect()
}

fn search_form(v: &Viewer) -> AnyView {
    let hint = v.tr("explorer.search_hint");
    view! {
        <form class="search" method="get" action="/explorer/search" role="search">
            <input type="search" name="q" aria-label=hint placeholder=hint/>
            <button type="submit" class="btn">{t("common.search")}</button>
        </form>
    }
    .into_any()
}

// ------------------------------------------------------------------ overview

async fn overview(v: Viewer) -> Response {
    let node = v.node().clone();
    let blocks = match node.store.blocks_desc(None, 30).await {
        Ok(b) => b,
        Err(e) => return internal(&v, e),
    };
    let latest_txs = match node.store.txs_desc(None, 10).await {
        Ok(t) => t,
        Err(e) => return internal(&v, e),
    };
    // Charts read oldest → newest.
    let chrono: Vec<_> = blocks.iter().rev().collect();
    let tx_series = Series {
        title: v.tr("explorer.chart_txs").to_string(),
        points: chrono
            .iter()
            .map(|b| (format!("#{}", b.height), f64::from(b.tx_count)))
            .collect(),
        unit: String::new(),
    };
    let interval_series = Series {
        title: v.tr("explorer.chart_interval").to_string(),
        points: chrono
            .windows(2)
            .map(|w| {
                (
                    format!("#{}", w[1].height),
                    (w[1].time_ms - w[0].time_ms) as f64 / 1000.0,
                )
            })
            .collect(),
        unit: " s".into(),
    };
    let recent: Vec<_> = blocks.iter().take(20).cloned().collect();
    let search = search_form(&v);
    v.page(v.tr("explorer.title"), move || {
        view! {
            <h1>{t("explorer.title")}</h1>
            {search}
            <div class="cards">
                <div class="card"><BarChart series=tx_series/></div>
                <div class="card"><LineChart series=interval_series/></div>
            </div>
            <h2>
                {t("explorer.latest_blocks")} " "
                <span id="live-status" class="badge badge-info" data-state="connecting">{t("common.live")}</span>
            </h2>
            <p class="muted">{t("explorer.live_hint")}</p>
            <LiveBlocksTable rows=recent/>
            <p><a href="/explorer/blocks">{t("explorer.blocks")} " →"</a></p>
            <h2>{t("explorer.latest_txs")}</h2>
            <Table cols=tx_cols() rows=tx_rows(&latest_txs)/>
            <p><a href="/explorer/txs">{t("explorer.txs")} " →"</a></p>
        }
        .into_any()
    })
}

/// The latest-blocks table whose body `app.js` keeps up to date from the node's SSE stream.
#[component]
fn LiveBlocksTable(rows: Vec<chain_core::storage::entities::block::Model>) -> impl IntoView {
    let head = block_cols()
        .into_iter()
        .map(|c| {
            let class = if c.numeric { "num" } else { "" };
            view! { <th scope="col" class=class>{t(c.label)}</th> }
        })
        .collect_view();
    let body = rows
        .iter()
        .map(|b| {
            let hex = hex::encode(&b.hash);
            let href = format!("/explorer/blocks/{}", b.height);
            view! {
                <tr data-height=b.height.to_string()>
                    <td><a href=href.clone()>{b.height}</a></td>
                    <td><a href=href>{short(&hex)}</a></td>
                    <td>{format_time(b.time_ms.max(0) as u64)}</td>
                    <td class="num">{b.tx_count}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <div class="table-wrap">
            <table>
                <thead><tr>{head}</tr></thead>
                <tbody id="live-blocks" data-live-blocks="/api/v1/stream" data-max-rows="20" data-live-status="live-status">
                    {body}
                </tbody>
            </table>
        </div>
    }
}

// ------------------------------------------------------------------ lists

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    page: Option<u64>,
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    dir: Option<String>,
}

async fn blocks(v: Viewer, q: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return crate::web::bad_request(&v, e.body_text()),
    };
    if q.sort.as_deref().is_some_and(|s| s != "height") {
        return crate::web::bad_request(&v, "blocks sort by height only".into());
    }
    let node = v.node().clone();
    let tip = node.tip().height;
    let total = tip + 1; // genesis included
    let page = q.page.unwrap_or(1).max(1);
    let desc = q.dir.as_deref() != Some("asc");
    let pages = total.div_ceil(PER_PAGE).max(1);
    if page > pages {
        return not_found(&v);
    }
    let skip = (page - 1) * PER_PAGE;
    // Heights are contiguous from 0 to the tip: a page is a height range.
    let heights: Vec<u64> = if desc {
        (0..PER_PAGE)
            .filter_map(|i| tip.checked_sub(skip + i))
            .collect()
    } else {
        (skip..(skip + PER_PAGE).min(total)).collect()
    };
    let mut rows = Vec::with_capacity(heights.len());
    for h in heights {
        match node.store.block_by_height(h).await {
            Ok(Some(b)) => rows.push(b),
            Ok(None) => {}
            Err(e) => return internal(&v, e),
        }
    }
    let paging = Paging {
        base: "/explorer/blocks".into(),
        sort: Some("height".into()),
        desc,
        page,
        per_page: PER_PAGE,
        total: Some(total),
        has_next: page < pages,
    };
    let rows = block_rows(&rows);
    v.page(v.tr("explorer.blocks"), move || {
        view! {
            <h1>{t("explorer.blocks")}</h1>
            <Table cols=block_cols() rows=rows paging=paging/>
        }
        .into_any()
    })
}

async fn txs(v: Viewer, q: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return crate::web::bad_request(&v, e.body_text()),
    };
    let page = q.page.unwrap_or(1).clamp(1, 400);
    let node = v.node().clone();
    // Newest first; paging by offset is fine for the recent pages people look at.
    let want = page * PER_PAGE + 1;
    let all = match node.store.txs_desc(None, want).await {
        Ok(t) => t,
        Err(e) => return internal(&v, e),
    };
    let start = ((page - 1) * PER_PAGE) as usize;
    let has_next = all.len() as u64 > page * PER_PAGE;
    let rows: Vec<_> = all
        .into_iter()
        .skip(start)
        .take(PER_PAGE as usize)
        .collect();
    let paging = Paging {
        base: "/explorer/txs".into(),
        sort: None,
        desc: true,
        page,
        per_page: PER_PAGE,
        total: None,
        has_next,
    };
    let rows = tx_rows(&rows);
    v.page(v.tr("explorer.txs"), move || {
        view! {
            <h1>{t("explorer.txs")}</h1>
            <Table cols=tx_cols() rows=rows paging=paging/>
        }
        .into_any()
    })
}

// ------------------------------------------------------------------ block

async fn block(v: Viewer, Path(id): Path<String>) -> Response {
    let node = v.node().clone();
    let row = if let Ok(h) = id.parse::<u64>() {
        node.store.block_by_height(h).await
    } else {
        match Digest::from_hex(node.hash_alg(), &id) {
            Ok(d) => node.store.block_by_hash(&d.bytes).await,
            Err(_) => return not_found(&v),
        }
    };
    let row = match row {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(&v),
        Err(e) => return internal(&v, e),
    };
    let (header, cert, set) = match decode_block_row(&row) {
        Ok(x) => x,
        Err(e) => return internal(&v, e),
    };
    let txs = match node.store.txs_in_block(header.height).await {
        Ok(t) => t,
        Err(e) => return internal(&v, e),
    };
    let title = format!("{} #{}", v.tr("explorer.block"), header.height);
    let hash = header.hash().to_hex();
    let prev = header.prev_hash.to_hex();
    let h = header.height;
    let sig_rows: Vec<Vec<AnyView>> = cert
        .signatures
        .iter()
        .map(|s| {
            let key = set
                .validators()
                .get(s.validator_index as usize)
                .map(|v| v.public_key.to_text())
                .unwrap_or_default();
            vec![
                text(s.validator_index.to_string()),
                account_link(&key),
                view! { <HashText value=s.signature.to_text()/> }.into_any(),
            ]
        })
        .collect();
    let facts = vec![
        ("explorer.height", text(h.to_string())),
        (
            "explorer.hash",
            view! { <HashText value=hash full=true/> }.into_any(),
        ),
        (
            "explorer.prev_hash",
            if h > 0 {
                view! { <HashText value=prev href=format!("/explorer/blocks/{}", h - 1)/> }
                    .into_any()
            } else {
                view! { <HashText value=prev/> }.into_any()
            },
        ),
        ("explorer.time", text(format_time(header.time_ms))),
        ("explorer.tx_count", text(header.tx_count.to_string())),
        (
            "explorer.proposer",
            account_link(&header.proposer.to_text()),
        ),
        (
            "explorer.tx_root",
            view! { <HashText value=header.tx_root.to_hex()/> }.into_any(),
        ),
        (
            "explorer.receipt_root",
            view! { <HashText value=header.receipt_root.to_hex()/> }.into_any(),
        ),
        (
            "explorer.state_root",
            view! { <HashText value=header.state_root.to_hex()/> }.into_any(),
        ),
        (
            "explorer.validator_set",
            view! { <HashText value=header.validator_set_hash.to_hex()/> }.into_any(),
        ),
        ("explorer.round", text(cert.round.to_string())),
    ];
    let rows = tx_rows(&txs);
    let nav_prev = (h > 0).then(|| format!("/explorer/blocks/{}", h - 1));
    let nav_next = (h < node.tip().height).then(|| format!("/explorer/blocks/{}", h + 1));
    let heading = title.clone();
    v.page(&title, move || {
        view! {
            <h1>{heading}</h1>
            <nav class="pager" aria-label=t("explorer.blocks")>
                {nav_prev.map(|p| view! { <a href=p rel="prev">{t("common.prev")}</a> })}
                {nav_next.map(|n| view! { <a href=n rel="next">{t("common.next")}</a> })}
            </nav>
            <div class="card"><Facts rows=facts/></div>
            <h2>{t("explorer.signatures")}</h2>
            <Table
                cols=vec![Col::new("explorer.index").numeric(), Col::new("explorer.validator_set"), Col::new("explorer.signatures")]
                rows=sig_rows
            />
            <h2>{t("explorer.txs")}</h2>
            <Table cols=tx_cols() rows=rows/>
        }
        .into_any()
    })
}

// ------------------------------------------------------------------ transaction

fn pretty_args(args: &[u8]) -> String {
    match serde_json::from_slice::<Value>(args) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => format!("hex: {}", hex::encode(args)),
    }
}

/// The validator set that signed block `height`, as this node (which verified every block)
/// knows it, in hex: the browser checks the bundle's signatures against it rather than
/// against the set the bundle carries.
pub async fn trusted_set_hex(v: &Viewer, height: u64) -> Option<String> {
    match v.node().validator_set_at(height).await {
        Ok(Some(set)) => Some(hex::encode(set.encode())),
        _ => None,
    }
}

/// The in-browser verification block for a proof bundle at `url`.
pub fn verify_block(v: &Viewer, url: String, trusted_set: Option<String>) -> AnyView {
    if v.node().info.suite != Suite::Ed25519Sha256 {
        return view! { <Notice tone=Tone::Warn message=t("verify.sm2")/> }.into_any();
    }
    view! {
        <section class="verify card">
            <p class="muted">{t("verify.explain")}</p>
            <button
                type="button"
                class="btn"
                id="verify-button"
                data-verify-url=url
                data-verify-trusted-set=trusted_set
                data-verify-output="verify-out"
                data-label-ok=t("verify.ok")
                data-label-fail=t("verify.fail")
                data-label-unavailable=t("verify.unavailable")
            >
                {t("verify.button")}
            </button>
            <div id="verify-out" class="verify-out" aria-live="polite"></div>
        </section>
    }
    .into_any()
}

async fn tx(v: Viewer, Path(id): Path<String>) -> Response {
    let node = v.node().clone();
    let Ok(digest) = Digest::from_hex(node.hash_alg(), &id) else {
        return not_found(&v);
    };
    let row = match node.store.tx(&digest.bytes).await {
        Ok(r) => r,
        Err(e) => return internal(&v, e),
    };
    let Some(row) = row else {
        // Not committed (yet): say whether it is waiting in the pool.
        if node.mempool.contains(&digest) {
            let id = digest.to_hex();
            return v.page(v.tr("explorer.tx"), move || {
                view! {
                    <h1>{t("explorer.tx")}</h1>
                    <p><HashText value=id full=true/></p>
                    <Badge tone=Tone::Warn label=t("status.pending")/>
                }
                .into_any()
            });
        }
        return not_found(&v);
    };
    let (stx, receipt) = match (
        SignedTx::decode(&row.raw, node.hash_alg()),
        Receipt::decode(&row.receipt),
    ) {
        (Ok(t), Ok(r)) => (t, r),
        (Err(e), _) => return internal(&v, e),
        (_, Err(e)) => return internal(&v, e),
    };
    // One read of the block gives both its time and the validator set that signed it (the
    // stored canonical bytes are what the browser compares against).
    let block_row = match node.store.block_by_height(row.height as u64).await {
        Ok(b) => b,
        Err(e) => return internal(&v, e),
    };
    let block_time = block_row
        .as_ref()
        .map(|b| format_time(b.time_ms.max(0) as u64));
    let trusted = block_row.map(|b| hex::encode(&b.validator_set));
    let id_hex = digest.to_hex();
    let ok = receipt.status == TxStatus::Ok;
    let b = &stx.body;
    let facts = vec![
        (
            "explorer.hash",
            view! { <HashText value=id_hex.clone() full=true/> }.into_any(),
        ),
        ("explorer.result", status_badge(ok)),
        ("explorer.block", block_link(row.height)),
        ("explorer.index", text(row.idx.to_string())),
        ("explorer.sender", account_link(&b.sender.to_text())),
        (
            "explorer.did",
            view! { <HashText value=b.sender.did()/> }.into_any(),
        ),
        ("explorer.nonce", text(b.nonce.to_string())),
        ("explorer.contract", code(b.contract.clone())),
        ("explorer.method", code(b.method.clone())),
        ("explorer.expiry", text(format_time(b.expiry_ms))),
    ];
    let args = pretty_args(&b.args);
    let receipt_facts = {
        let mut r = vec![("explorer.result", status_badge(ok))];
        if !receipt.code.is_empty() {
            r.push(("explorer.code", code(receipt.code.clone())));
            r.push(("explorer.message", text(receipt.message.clone())));
        }
        r
    };
    let event_rows: Vec<Vec<AnyView>> = receipt
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            vec![
                text(i.to_string()),
                code(e.contract.clone()),
                code(e.kind.clone()),
                code(String::from_utf8_lossy(&e.data).into_owned()),
            ]
        })
        .collect();
    let timeline = vec![
        TimelineItem {
            time: None,
            title: v.tr("explorer.signed").to_string(),
            detail: Some(format!("{} {}", v.tr("explorer.nonce"), b.nonce)),
            tone: Tone::Ok,
        },
        TimelineItem {
            time: block_time.clone(),
            title: format!("{} #{}", v.tr("explorer.included"), row.height),
            detail: Some(format!("{} {}", v.tr("explorer.index"), row.idx)),
            tone: if ok { Tone::Ok } else { Tone::Bad },
        },
        TimelineItem {
            time: block_time,
            title: v.tr("explorer.finalised").to_string(),
            detail: None,
            tone: Tone::Ok,
        },
    ];
    let proof_url = format!("/api/v1/txs/{id_hex}/proof");
    let verify = verify_block(&v, proof_url.clone(), trusted);
    let permalink = format!("/explorer/txs/{id_hex}");
    let title = v.tr("explorer.tx").to_string();
    v.page(&title, move || {
        view! {
            <h1>{t("explorer.tx")}</h1>
            <div class="split">
                <div>
                    <div class="card"><Facts rows=facts/></div>
                    <h2>{t("explorer.args")}</h2>
                    <pre class="json">{args}</pre>
                    <h2>{t("explorer.receipt")}</h2>
                    <div class="card"><Facts rows=receipt_facts/></div>
                    <h2>{t("explorer.events")}</h2>
                    <Table
                        cols=vec![Col::new("explorer.index").numeric(), Col::new("explorer.contract"), Col::new("explorer.event"), Col::new("explorer.value")]
                        rows=event_rows
                    />
                </div>
                <aside>
                    <h2>{t("explorer.lifecycle")}</h2>
                    <Timeline items=timeline/>
                    {verify}
                    <p><a href=proof_url>{t("explorer.proof_link")}</a></p>
                    <Qr data=permalink.clone() caption=permalink/>
                </aside>
            </div>
        }
        .into_any()
    })
}

// ------------------------------------------------------------------ account

async fn account(v: Viewer, Path(key): Path<String>) -> Response {
    let node = v.node().clone();
    let Ok(pk) = key.parse::<PublicKey>() else {
        return not_found(&v);
    };
    let acc = match node.account(&pk).await {
        Ok(a) => a,
        Err(e) => return internal(&v, e),
    };
    let recent = match node.store.txs_by_sender(&pk.to_text(), 25).await {
        Ok(r) => r,
        Err(e) => return internal(&v, e),
    };
    let key_status = match &acc.key_status {
        Some(chain_core::system::Status::Active) => {
            view! { <Badge tone=Tone::Ok label=t("status.active")/> }.into_any()
        }
        Some(chain_core::system::Status::Rotated) => {
            view! { <Badge tone=Tone::Warn label=t("status.rotated")/> }.into_any()
        }
        Some(chain_core::system::Status::Revoked) => {
            view! { <Badge tone=Tone::Bad label=t("status.revoked")/> }.into_any()
        }
        None => text(v.tr("common.none")),
    };
    let roles = if acc.roles.is_empty() {
        v.tr("common.none").to_string()
    } else {
        acc.roles.join(", ")
    };
    let facts = vec![
        (
            "admin.public_key",
            view! { <HashText value=acc.public_key.clone() full=true/> }.into_any(),
        ),
        (
            "explorer.did",
            view! { <HashText value=acc.did.clone()/> }.into_any(),
        ),
        (
            "explorer.organisation",
            text(
                acc.organisation
                    .clone()
                    .unwrap_or_else(|| v.tr("common.none").into()),
            ),
        ),
        (
            "explorer.member",
            text(
                acc.member
                    .clone()
                    .unwrap_or_else(|| v.tr("common.none").into()),
            ),
        ),
        ("explorer.roles", text(roles)),
        ("explorer.key_status", key_status),
        ("explorer.nonce", text(acc.nonce.to_string())),
        ("explorer.pending", text(acc.pending.to_string())),
    ];
    let rows = tx_rows(&recent);
    let did = acc.did.clone();
    v.page(v.tr("explorer.account"), move || {
        view! {
            <h1>{t("explorer.account")}</h1>
            <div class="split">
                <div class="card"><Facts rows=facts/></div>
                <aside><Qr data=did.clone() caption=did/></aside>
            </div>
            <h2>{t("explorer.recent_txs")}</h2>
            <Table cols=tx_cols() rows=rows/>
        }
        .into_any()
    })
}

// ------------------------------------------------------------------ state

#[derive(Deserialize, Default)]
struct StateQuery {
    #[serde(default)]
    contract: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

async fn state(v: Viewer, q: Result<Query<StateQuery>, QueryRejection>) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return crate::web::bad_request(&v, e.body_text()),
    };
    let node = v.node().clone();
    let contracts: Vec<String> = node
        .registry
        .names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let contract = q.contract.unwrap_or_else(|| "system".into());
    let key = q.key.unwrap_or_default();
    let options = contracts
        .iter()
        .map(|c| {
            let selected = *c == contract;
            view! { <option value=c.clone() selected=selected>{c.clone()}</option> }
        })
        .collect_view();
    let lookup = if key.is_empty() {
        None
    } else if !contracts.contains(&contract) || key.len() > 1024 {
        return not_found(&v);
    } else {
        match node.state_value(&contract, key.as_bytes()).await {
            Ok(val) => Some(val),
            Err(e) => return internal(&v, e),
        }
    };
    let height = node.tip().height;
    let trusted = trusted_set_hex(&v, height).await;
    let result = lookup.map(|val| {
        let shown = match &val {
            Some(bytes) => match serde_json::from_slice::<Value>(bytes) {
                Ok(j) => serde_json::to_string_pretty(&j).unwrap_or_default(),
                Err(_) => format!("hex: {}", hex::encode(bytes)),
            },
            None => v.tr("explorer.absent").to_string(),
        };
        let url = format!(
            "/api/v1/state/{}/{}?key_encoding=hex",
            urlencode(&contract),
            hex::encode(key.as_bytes())
        );
        let verify = (height > 0).then(|| verify_block(&v, url, trusted));
        view! {
            <h2>{t("explorer.value")} " · " {t("explorer.at_height")} " " {height}</h2>
            <pre class="json">{shown}</pre>
            {verify}
        }
        .into_any()
    });
    v.page(v.tr("explorer.state"), move || {
        view! {
            <h1>{t("explorer.state")}</h1>
            <form class="form" method="get" action="/explorer/state">
                <div class="field">
                    <label for="f-contract">{t("explorer.contract")}</label>
                    <select id="f-contract" name="contract">{options}</select>
                </div>
                <Field name="key" label="explorer.key" value=key.clone()/>
                <button type="submit">{t("explorer.state_lookup")}</button>
            </form>
            {result}
        }
        .into_any()
    })
}

// ------------------------------------------------------------------ search

#[derive(Deserialize, Default)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

async fn search(v: Viewer, q: Result<Query<SearchQuery>, QueryRejection>) -> Response {
    let q = match q {
        Ok(Query(q)) => q.q,
        Err(e) => return crate::web::bad_request(&v, e.body_text()),
    };
    let q = q.trim();
    let node = v.node().clone();
    if let Ok(h) = q.parse::<u64>()
        && h <= node.tip().height
    {
        return Redirect::to(&format!("/explorer/blocks/{h}")).into_response();
    }
    if let Ok(d) = Digest::from_hex(node.hash_alg(), q) {
        if let Ok(Some(_)) = node.store.tx(&d.bytes).await {
            return Redirect::to(&format!("/explorer/txs/{}", d.to_hex())).into_response();
        }
        if let Ok(Some(b)) = node.store.block_by_hash(&d.bytes).await {
            return Redirect::to(&format!("/explorer/blocks/{}", b.height)).into_response();
        }
    }
    if let Ok(pk) = q.parse::<PublicKey>() {
        return Redirect::to(&format!("/explorer/accounts/{}", pk.to_text())).into_response();
    }
    let search = search_form(&v);
    v.page_with_status(StatusCode::NOT_FOUND, v.tr("common.search"), move || {
        view! {
            <h1>{t("common.search")}</h1>
            {search}
            <EmptyState message=t("explorer.search_none")/>
        }
        .into_any()
    })
}
