//! Enterprise pages under `/traceability`: overview with live alerts, products, lots (with the
//! forward/backward trace graph and the recall action), events, locations, alerts, and label
//! printing (QR PNG, label sheet PDF). Every action is a form signed on the server with the
//! user's custodial key; the contract checks the role again.

use axum::extract::{Extension, Path, Query};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chain_core::node::now_ms;
use frontend::auth::CallError;
use frontend::components::*;
use frontend::i18n::t;
use frontend::web::{Shared, Viewer};
use leptos::prelude::*;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Deserialize;
use serde_json::json;

use crate::app::TraceShared;
use crate::consumer::{
    ColdChainChart, biz_step_label, journey, lot_epc_key, readings, unit_epc_key,
};
use crate::contract::{NAME, ROLE_OPERATOR};
use crate::digital_link::{DigitalLink, PrimaryKey, Qualifier};
use crate::domain::*;
use crate::graph::{TraceGraph, trace};
use crate::gs1::{Gtin, Lot as LotNumber, SerialNumber};
use crate::labels::{self, Label};
use crate::store::{trace_alert, trace_event, trace_handover};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/traceability", get(overview))
        .route("/traceability/products", get(products).post(add_product))
        .route("/traceability/lots", get(lots).post(add_lot))
        .route("/traceability/lots/{gtin}/{*lot}", get(lot_page))
        .route("/traceability/recall", post(recall))
        .route("/traceability/certificates", post(anchor_certificate))
        .route(
            "/traceability/handovers",
            get(handovers).post(offer_handover),
        )
        .route("/traceability/handovers/answer", post(answer_handover))
        .route("/traceability/events", get(events))
        .route("/traceability/locations", get(locations).post(add_location))
        .route("/traceability/alerts", get(alerts))
        .route("/traceability/alerts/stream", get(alert_stream))
        .route("/traceability/labels.pdf", get(label_sheet))
        .route("/traceability/qr.png", get(qr_png))
}

const PER_PAGE: u64 = 25;
/// Lots drawn in a trace graph; larger graphs are cut (and say so).
const GRAPH_MAX_NODES: usize = 400;

fn internal(v: &Viewer, e: impl std::fmt::Display) -> Response {
    tracing::error!("traceability: {e}");
    v.error(StatusCode::INTERNAL_SERVER_ERROR, "state.error", None)
}

fn text(s: impl Into<String>) -> AnyView {
    let s: String = s.into();
    view! { <span>{s}</span> }.into_any()
}

fn code(s: impl Into<String>) -> AnyView {
    let s: String = s.into();
    view! { <code>{s}</code> }.into_any()
}

fn subnav(current: &'static str) -> AnyView {
    let items = [
        ("/traceability", "trace.overview"),
        ("/traceability/products", "trace.products"),
        ("/traceability/lots", "trace.lots"),
        ("/traceability/events", "trace.events"),
        ("/traceability/locations", "trace.locations"),
        ("/traceability/handovers", "trace.handovers"),
        ("/traceability/alerts", "trace.alerts"),
    ]
    .into_iter()
    .map(|(href, label)| {
        let here = href == current;
        view! { <a href=href aria-current=here.then_some("page")>{t(label)}</a> }
    })
    .collect_view();
    view! { <nav class="actions subnav" aria-label=t("nav.traceability")>{items}</nav> }.into_any()
}

pub fn status_badge(s: LotStatus) -> AnyView {
    match s {
        LotStatus::Ok => view! { <Badge tone=Tone::Ok label=t("trace.status.ok")/> }.into_any(),
        LotStatus::NonConformant => {
            view! { <Badge tone=Tone::Bad label=t("trace.status.non_conformant")/> }.into_any()
        }
        LotStatus::Recalled => {
            view! { <Badge tone=Tone::Bad label=t("trace.status.recalled")/> }.into_any()
        }
    }
}

fn lot_href(gtin: &str, lot: &str) -> String {
    format!("/traceability/lots/{gtin}/{}", urlencode(lot))
}

/// The resolver link of a lot (and serial), as printed in its QR code.
pub fn consumer_link(base: &str, gtin: &str, lot: Option<&str>, serial: Option<&str>) -> String {
    let Ok(g) = Gtin::parse(gtin) else {
        return format!("{base}/01/{gtin}");
    };
    let mut link = match DigitalLink::new(base, PrimaryKey::Gtin(g)) {
        Ok(l) => l,
        Err(_) => return format!("{base}/01/{gtin}"),
    };
    if let Some(l) = lot {
        match link.clone().with_qualifier(Qualifier::Lot, l) {
            Ok(x) => link = x,
            Err(_) => return format!("{base}/01/{gtin}"),
        }
    }
    if let Some(s) = serial
        && let Ok(x) = link.clone().with_qualifier(Qualifier::Serial, s)
    {
        link = x;
    }
    link.to_string()
}

async fn list_state<T: serde::de::DeserializeOwned>(
    app: &TraceShared,
    prefix: &str,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<(String, T)>, String> {
    let rows = app
        .node
        .state_list(NAME, prefix.as_bytes(), after.map(str::as_bytes), limit)
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows
        .into_iter()
        .filter_map(|(k, v)| {
            Some((
                String::from_utf8(k).ok()?,
                serde_json::from_slice::<T>(&v).ok()?,
            ))
        })
        .collect())
}

/// Whether the signed-in user may act for their organisation in traceability.
fn may_operate(v: &Viewer) -> bool {
    v.user.as_ref().is_some_and(|u| {
        u.has_role(ROLE_OPERATOR) || u.has_role(chain_core::system::ROLE_ORG_ADMIN)
    })
}

/// One page of records under a state prefix, and the cursor of the next page.
async fn state_page<T: serde::de::DeserializeOwned>(
    app: &TraceShared,
    v: &Viewer,
    prefix: &str,
    after: Option<&str>,
) -> Result<(Vec<T>, Option<String>), Response> {
    let mut list: Vec<(String, T)> = list_state(app, prefix, after, PER_PAGE + 1)
        .await
        .map_err(|e| internal(v, e))?;
    let next = (list.len() as u64 > PER_PAGE).then(|| list[PER_PAGE as usize - 1].0.clone());
    list.truncate(PER_PAGE as usize);
    Ok((list.into_iter().map(|(_, t)| t).collect(), next))
}

/// The "next page" link of a list whose cursor is `next`.
fn next_link(path: &'static str, next: Option<String>) -> Option<AnyView> {
    next.map(|n| {
        view! { <p><a class="btn secondary" href=format!("{path}?after={}", urlencode(&n))>{t("common.next")}</a></p> }
            .into_any()
    })
}

/// A traceability form post: its token matches, the user may act for their organisation in
/// traceability and their key is in the keystore.
fn operator_action(v: &Viewer, csrf: &str) -> Result<(UserView, String), Response> {
    v.check_csrf(csrf)?;
    let user = v.require_user()?.clone();
    if !(user.has_role(ROLE_OPERATOR) || user.has_role(chain_core::system::ROLE_ORG_ADMIN)) {
        return Err(v.error(StatusCode::FORBIDDEN, "auth.forbidden", None));
    }
    let label = v
        .key_label
        .clone()
        .ok_or_else(|| v.error(StatusCode::FORBIDDEN, "auth.forbidden", None))?;
    Ok((user, label))
}

/// Signs and submits a `trace` call with the user's key; once it is committed, waits (briefly)
/// for the read model to include its block, so the page the user is sent to shows its effect.
async fn call(
    app: &TraceShared,
    v: &Viewer,
    label: &str,
    method: &str,
    args: &serde_json::Value,
) -> Result<chain_core::node::TxOutcome, CallError> {
    let out = v
        .state
        .custody
        .call(v.node(), label, NAME, method, args)
        .await?;
    app.indexed
        .wait_for(out.height, std::time::Duration::from_secs(5))
        .await;
    Ok(out)
}

/// A contract refusal as a field message key (and the contract's own words for the notice).
fn chain_message(e: &CallError) -> (String, String) {
    match e {
        CallError::Chain { code, message } => (code.clone(), message.clone()),
        CallError::Key(m) => ("key_unavailable".into(), m.clone()),
    }
}

fn gs1_field_error(code: &str) -> Option<&'static str> {
    match code {
        "gs1_check_digit" => Some("trace.err.check_digit"),
        "gs1_length" | "gs1_non_digit" => Some("trace.err.gtin_format"),
        "gs1_charset" | "gs1_field_length" => Some("trace.err.charset"),
        _ => None,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Paged {
    after: Option<String>,
    done: Option<String>,
}

fn flash(done: &Option<String>) -> Option<&'static str> {
    const KNOWN: [&str; 9] = [
        "trace.product_added",
        "trace.lot_added",
        "trace.location_added",
        "trace.recalled_done",
        "trace.handover_offered",
        "trace.handover_accepted",
        "trace.handover_rejected",
        "trace.handover_cancelled",
        "trace.certificate_anchored",
    ];
    let d = done.as_deref()?;
    KNOWN.iter().find(|k| **k == d).copied()
}

// ------------------------------------------------------------------------------ overview

async fn overview(Extension(app): Extension<TraceShared>, v: Viewer) -> Response {
    let events = trace_event::Entity::find()
        .count(&app.db)
        .await
        .unwrap_or(0);
    let alerts_n = trace_alert::Entity::find()
        .count(&app.db)
        .await
        .unwrap_or(0);
    let products = app
        .node
        .state_list(NAME, b"product/", None, 10_000)
        .await
        .map(|r| r.len())
        .unwrap_or(0);
    let lots = app
        .node
        .state_list(NAME, b"lot/", None, 10_000)
        .await
        .map(|r| r.len())
        .unwrap_or(0);
    let recent = match trace_alert::Entity::find()
        .order_by_desc(trace_alert::Column::Id)
        .limit(20)
        .all(&app.db)
        .await
    {
        Ok(r) => r,
        Err(e) => return internal(&v, e),
    };
    let rows = alert_rows(&recent);
    v.page(v.tr("nav.traceability"), move || {
        view! {
            <h1>{t("nav.traceability")}</h1>
            {subnav("/traceability")}
            <div class="cards four">
                <div class="card"><p class="stat-label">{t("trace.products")}</p><p class="stat">{products}</p></div>
                <div class="card"><p class="stat-label">{t("trace.lots")}</p><p class="stat">{lots}</p></div>
                <div class="card"><p class="stat-label">{t("trace.events")}</p><p class="stat">{events}</p></div>
                <div class="card"><p class="stat-label">{t("trace.alerts")}</p><p class="stat">{alerts_n}</p></div>
            </div>
            <h2>{t("trace.latest_alerts")} " " <span id="live-alerts-status" class="live-dot" aria-hidden="true"></span></h2>
            {alert_table(rows, true)}
        }
        .into_any()
    })
}

fn alert_label(kind: &str) -> String {
    match kind {
        "excursion" => t("trace.alert.excursion").to_string(),
        "recall" => t("trace.alert.recall").to_string(),
        "counterfeit" => t("trace.alert.counterfeit").to_string(),
        other => other.to_string(),
    }
}

fn alert_rows(rows: &[trace_alert::Model]) -> Vec<Vec<AnyView>> {
    rows.iter()
        .map(|a| {
            let lot = a
                .lot_key
                .strip_prefix("lot/")
                .unwrap_or(&a.lot_key)
                .to_string();
            let (gtin, lot_no) = lot.split_once('/').unwrap_or((&lot, ""));
            let detail: serde_json::Value = serde_json::from_str(&a.detail).unwrap_or_default();
            let count = detail["count"]
                .as_u64()
                .or_else(|| detail["distinct_scanners"].as_u64())
                .map(|c| c.to_string())
                .unwrap_or_default();
            let tone = if a.kind == "recall" || a.kind == "counterfeit" {
                Tone::Bad
            } else {
                Tone::Warn
            };
            // Counterfeit alerts name the scanned code (`gtin/serial`): show its serial.
            let label = match a
                .serial
                .as_deref()
                .map(|s| s.rsplit('/').next().unwrap_or(s))
            {
                Some(s) => format!("{gtin} / {lot_no} · {s}"),
                None => format!("{gtin} / {lot_no}"),
            };
            let where_ = match a.height {
                Some(h) => view! { <a href=format!("/explorer/blocks/{h}")>{format!("#{h}")}</a> }
                    .into_any(),
                None => text(format_time(a.time_ms.max(0) as u64)),
            };
            vec![
                view! { <Badge tone=tone label=alert_label(&a.kind)/> }.into_any(),
                view! { <a href=lot_href(gtin, lot_no)>{label}</a> }.into_any(),
                text(count),
                where_,
            ]
        })
        .collect()
}

fn alert_table(rows: Vec<Vec<AnyView>>, live: bool) -> AnyView {
    let table = view! {
        <Table
            cols=vec![Col::new("trace.alert_kind"), Col::new("trace.lot"), Col::new("trace.count").numeric(), Col::new("trace.when")]
            rows=rows
            body_id="alerts-body"
        />
    };
    if !live {
        return table.into_any();
    }
    // app.js prepends each new `alert` contract event of the node's stream to this table.
    view! {
        <div
            class="live-alerts"
            data-live-alerts="/traceability/alerts/stream"
            data-live-status="live-alerts-status"
            data-lot-href="/traceability/lots/{gtin}/{lot}"
            data-label-excursion=t("trace.alert.excursion")
            data-label-recall=t("trace.alert.recall")
            data-label-counterfeit=t("trace.alert.counterfeit")
        >
            {table}
        </div>
    }
    .into_any()
}

// ------------------------------------------------------------------------------ products

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct ProductForm {
    csrf: String,
    gtin: String,
    name: String,
    name_zh: String,
    brand: String,
    origin: String,
    temp_min: String,
    temp_max: String,
    humidity_min: String,
    humidity_max: String,
    shelf_life_days: String,
}

#[derive(Default, Clone, Copy)]
struct ProductErrors {
    gtin: Option<&'static str>,
    name: Option<&'static str>,
    temp: Option<&'static str>,
    humidity: Option<&'static str>,
    shelf: Option<&'static str>,
}

async fn products(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    Query(p): Query<Paged>,
) -> Response {
    products_page(
        &app,
        &v,
        StatusCode::OK,
        ProductForm::default(),
        ProductErrors::default(),
        None,
        flash(&p.done),
        p.after,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn products_page(
    app: &TraceShared,
    v: &Viewer,
    status: StatusCode,
    form: ProductForm,
    errors: ProductErrors,
    refusal: Option<String>,
    done: Option<&'static str>,
    after: Option<String>,
) -> Response {
    let (list, next) = match state_page::<Product>(app, v, "product/", after.as_deref()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let rows: Vec<Vec<AnyView>> = list
        .iter()
        .map(|p| {
            let range = p
                .temperature
                .map(|r| {
                    format!(
                        "{:.1} – {:.1} °C",
                        r.min as f64 / 100.0,
                        r.max as f64 / 100.0
                    )
                })
                .unwrap_or_default();
            vec![
                code(p.gtin.clone()),
                text(p.name.clone()),
                text(p.owner.clone()),
                text(range),
                text(p.shelf_life_days.map(|d| d.to_string()).unwrap_or_default()),
            ]
        })
        .collect();
    let can_act = may_operate(v);
    v.page_with_status(status, v.tr("trace.products"), move || {
        let form_view = can_act.then(|| view! {
            <h2>{t("trace.add_product")}</h2>
            {refusal.clone().map(|r| view! { <Notice tone=Tone::Bad message=r/> })}
            <PostForm action="/traceability/products">
                <Field name="gtin" label="trace.gtin" value=form.gtin.clone() error=errors.gtin hint=Some("trace.gtin_hint") required=true/>
                <Field name="name" label="trace.name" value=form.name.clone() error=errors.name required=true/>
                <Field name="name_zh" label="trace.name_zh" value=form.name_zh.clone()/>
                <Field name="brand" label="trace.brand" value=form.brand.clone()/>
                <Field name="origin" label="trace.origin_country" value=form.origin.clone()/>
                <Field name="temp_min" label="trace.temp_min" value=form.temp_min.clone() error=errors.temp/>
                <Field name="temp_max" label="trace.temp_max" value=form.temp_max.clone() error=errors.temp/>
                <Field name="humidity_min" label="trace.humidity_min" value=form.humidity_min.clone() error=errors.humidity/>
                <Field name="humidity_max" label="trace.humidity_max" value=form.humidity_max.clone() error=errors.humidity/>
                <Field name="shelf_life_days" label="trace.shelf_life" value=form.shelf_life_days.clone() error=errors.shelf/>
                <button type="submit">{t("trace.add_product")}</button>
            </PostForm>
        });
        view! {
            <h1>{t("trace.products")}</h1>
            {subnav("/traceability/products")}
            {done.map(|f| view! { <Notice tone=Tone::Ok message=t(f)/> })}
            <Table
                cols=vec![Col::new("trace.gtin"), Col::new("trace.name"), Col::new("trace.owner"), Col::new("trace.temperature"), Col::new("trace.shelf_life").numeric()]
                rows=rows
            />
            {next_link("/traceability/products", next.clone())}
            {form_view}
        }
        .into_any()
    })
}

fn parse_opt_f64(s: &str) -> Result<Option<f64>, ()> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.replace(',', ".").parse::<f64>().map(Some).map_err(|_| ())
}

async fn add_product(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    Form(f): Form<ProductForm>,
) -> Response {
    let (_user, label) = match operator_action(&v, &f.csrf) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut errors = ProductErrors::default();
    let gtin = match Gtin::parse(f.gtin.trim()) {
        Ok(g) => Some(g.as_str().to_string()),
        Err(e) => {
            errors.gtin = gs1_field_error(e.code()).or(Some("trace.err.gtin_format"));
            None
        }
    };
    if f.name.trim().is_empty() {
        errors.name = Some("form.required");
    }
    let temp = match (parse_opt_f64(&f.temp_min), parse_opt_f64(&f.temp_max)) {
        (Ok(None), Ok(None)) => None,
        (Ok(Some(a)), Ok(Some(b))) if a <= b => Some([a, b]),
        _ => {
            errors.temp = Some("trace.err.range");
            None
        }
    };
    let humidity = match (
        parse_opt_f64(&f.humidity_min),
        parse_opt_f64(&f.humidity_max),
    ) {
        (Ok(None), Ok(None)) => None,
        (Ok(Some(a)), Ok(Some(b))) if a <= b && a >= 0.0 && b <= 100.0 => Some([a, b]),
        _ => {
            errors.humidity = Some("trace.err.humidity");
            None
        }
    };
    let shelf = match f.shelf_life_days.trim() {
        "" => None,
        s => match s.parse::<u32>() {
            Ok(d) if d > 0 => Some(d),
            _ => {
                errors.shelf = Some("trace.err.number");
                None
            }
        },
    };
    let gtin_detail = Gtin::parse(f.gtin.trim()).err().map(|e| e.to_string());
    if errors.gtin.is_some()
        || errors.name.is_some()
        || errors.temp.is_some()
        || errors.humidity.is_some()
        || errors.shelf.is_some()
    {
        return products_page(
            &app,
            &v,
            StatusCode::UNPROCESSABLE_ENTITY,
            f,
            errors,
            gtin_detail,
            None,
            None,
        )
        .await;
    }
    let args = json!({
        "gtin": gtin,
        "name": f.name.trim(),
        "name_zh": f.name_zh.trim(),
        "brand": f.brand.trim(),
        "origin": f.origin.trim().to_uppercase(),
        "temperature_c": temp,
        "humidity_pct": humidity,
        "shelf_life_days": shelf,
    });
    match call(&app, &v, &label, "register_product", &args).await {
        Ok(_) => Redirect::to("/traceability/products?done=trace.product_added").into_response(),
        Err(e) => {
            let (code, message) = chain_message(&e);
            if code == "product_exists" || code == "not_permitted" {
                errors.gtin = Some("trace.err.gtin_taken");
            }
            products_page(
                &app,
                &v,
                StatusCode::UNPROCESSABLE_ENTITY,
                f,
                errors,
                Some(format!("{code}: {message}")),
                None,
                None,
            )
            .await
        }
    }
}

// ------------------------------------------------------------------------------ lots

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct LotForm {
    csrf: String,
    gtin: String,
    lot: String,
    expiry: String,
    location: String,
    quantity: String,
}

#[derive(Default, Clone, Copy)]
struct LotErrors {
    gtin: Option<&'static str>,
    lot: Option<&'static str>,
    expiry: Option<&'static str>,
    location: Option<&'static str>,
}

async fn lots(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    Query(p): Query<Paged>,
) -> Response {
    lots_page(
        &app,
        &v,
        StatusCode::OK,
        LotForm::default(),
        LotErrors::default(),
        None,
        flash(&p.done),
        p.after,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn lots_page(
    app: &TraceShared,
    v: &Viewer,
    status: StatusCode,
    form: LotForm,
    errors: LotErrors,
    refusal: Option<String>,
    done: Option<&'static str>,
    after: Option<String>,
) -> Response {
    let (list, next) = match state_page::<Lot>(app, v, "lot/", after.as_deref()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let rows: Vec<Vec<AnyView>> = list
        .iter()
        .map(|l| {
            vec![
                code(l.gtin.clone()),
                view! { <a href=lot_href(&l.gtin, &l.lot)>{l.lot.clone()}</a> }.into_any(),
                status_badge(l.status),
                text(l.owner.clone()),
                text(l.custodian.clone()),
                text(
                    l.expiry_ms
                        .map(|e| format_time(e)[..10].to_string())
                        .unwrap_or_default(),
                ),
            ]
        })
        .collect();
    let can_act = may_operate(v);
    v.page_with_status(status, v.tr("trace.lots"), move || {
        let form_view = can_act.then(|| view! {
            <h2>{t("trace.add_lot")}</h2>
            {refusal.clone().map(|r| view! { <Notice tone=Tone::Bad message=r/> })}
            <PostForm action="/traceability/lots">
                <Field name="gtin" label="trace.gtin" value=form.gtin.clone() error=errors.gtin required=true/>
                <Field name="lot" label="trace.lot" value=form.lot.clone() error=errors.lot required=true/>
                <Field name="expiry" label="trace.expiry" kind="date" value=form.expiry.clone() error=errors.expiry/>
                <Field name="location" label="trace.location_gln" value=form.location.clone() error=errors.location/>
                <Field name="quantity" label="trace.quantity" value=form.quantity.clone()/>
                <button type="submit">{t("trace.add_lot")}</button>
            </PostForm>
        });
        view! {
            <h1>{t("trace.lots")}</h1>
            {subnav("/traceability/lots")}
            {done.map(|f| view! { <Notice tone=Tone::Ok message=t(f)/> })}
            <Table
                cols=vec![Col::new("trace.gtin"), Col::new("trace.lot"), Col::new("trace.status"), Col::new("trace.owner"), Col::new("trace.custodian"), Col::new("trace.expiry")]
                rows=rows
            />
            {next_link("/traceability/lots", next.clone())}
            {form_view}
        }
        .into_any()
    })
}

/// `YYYY-MM-DD` → end of that day (UTC), ms.
fn date_end_ms(s: &str) -> Option<u64> {
    let d = chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?;
    let t = d.and_hms_opt(23, 59, 59)?.and_utc().timestamp_millis();
    u64::try_from(t).ok()
}

async fn add_lot(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    Form(f): Form<LotForm>,
) -> Response {
    let (_user, label) = match operator_action(&v, &f.csrf) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut errors = LotErrors::default();
    let mut detail = None;
    let gtin = match Gtin::parse(f.gtin.trim()) {
        Ok(g) => Some(g.as_str().to_string()),
        Err(e) => {
            errors.gtin = gs1_field_error(e.code()).or(Some("trace.err.gtin_format"));
            detail = Some(e.to_string());
            None
        }
    };
    if let Err(e) = LotNumber::parse(f.lot.trim()) {
        errors.lot = Some("trace.err.charset");
        detail.get_or_insert(e.to_string());
    }
    let expiry = match f.expiry.trim() {
        "" => None,
        s => match date_end_ms(s) {
            Some(ms) => Some(ms),
            None => {
                errors.expiry = Some("trace.err.date");
                None
            }
        },
    };
    let location = match f.location.trim() {
        "" => None,
        s => match crate::gs1::Gln::parse(s) {
            Ok(g) => Some(g.as_str().to_string()),
            Err(e) => {
                errors.location = gs1_field_error(e.code()).or(Some("trace.err.gtin_format"));
                detail.get_or_insert(e.to_string());
                None
            }
        },
    };
    if errors.gtin.is_some()
        || errors.lot.is_some()
        || errors.expiry.is_some()
        || errors.location.is_some()
    {
        return lots_page(
            &app,
            &v,
            StatusCode::UNPROCESSABLE_ENTITY,
            f,
            errors,
            detail,
            None,
            None,
        )
        .await;
    }
    let args = json!({
        "gtin": gtin,
        "lot": f.lot.trim(),
        "produced_ms": now_ms(),
        "expiry_ms": expiry,
        "location": location,
        "quantity": (!f.quantity.trim().is_empty()).then(|| f.quantity.trim().to_string()),
    });
    match call(&app, &v, &label, "create_lot", &args).await {
        Ok(_) => Redirect::to("/traceability/lots?done=trace.lot_added").into_response(),
        Err(e) => {
            let (code, message) = chain_message(&e);
            match code.as_str() {
                "unknown_product" | "not_permitted" => {
                    errors.gtin = Some("trace.err.unknown_product")
                }
                "lot_exists" => errors.lot = Some("trace.err.lot_exists"),
                _ => {}
            }
            lots_page(
                &app,
                &v,
                StatusCode::UNPROCESSABLE_ENTITY,
                f,
                errors,
                Some(format!("{code}: {message}")),
                None,
                None,
            )
            .await
        }
    }
}

/// The trace graph as SVG: one column per level (upstream left, downstream right).
fn graph_svg(g: &TraceGraph) -> AnyView {
    const COL_W: f64 = 170.0;
    const ROW_H: f64 = 46.0;
    const BOX_W: f64 = 150.0;
    const BOX_H: f64 = 34.0;
    let min_level = g.nodes.iter().map(|n| n.level).min().unwrap_or(0);
    let max_level = g.nodes.iter().map(|n| n.level).max().unwrap_or(0);
    let mut rows_per_level = std::collections::BTreeMap::<i32, usize>::new();
    let mut pos = Vec::with_capacity(g.nodes.len());
    for n in &g.nodes {
        let r = rows_per_level.entry(n.level).or_insert(0);
        pos.push((
            10.0 + (n.level - min_level) as f64 * COL_W,
            10.0 + *r as f64 * ROW_H,
        ));
        *r += 1;
    }
    let rows = rows_per_level.values().copied().max().unwrap_or(1);
    let w = 20.0 + (max_level - min_level + 1) as f64 * COL_W;
    let h = 20.0 + rows as f64 * ROW_H;
    let edges = g
        .edges
        .iter()
        .filter_map(|(a, b)| {
            let (ax, ay) = *pos.get(*a)?;
            let (bx, by) = *pos.get(*b)?;
            let (x1, y1, x2, y2) = (ax + BOX_W, ay + BOX_H / 2.0, bx, by + BOX_H / 2.0);
            let mid = (x1 + x2) / 2.0;
            let d = format!("M{x1:.0},{y1:.0} C{mid:.0},{y1:.0} {mid:.0},{y2:.0} {x2:.0},{y2:.0}");
            Some(view! { <path class="edge" d=d></path> })
        })
        .collect_view();
    let boxes = g
        .nodes
        .iter()
        .zip(&pos)
        .map(|(n, (x, y))| {
            let class = match n.status {
                Some(LotStatus::Recalled) => "lot-box lot-recalled",
                Some(LotStatus::NonConformant) => "lot-box lot-bad",
                Some(LotStatus::Ok) if n.level == 0 => "lot-box lot-root",
                Some(LotStatus::Ok) => "lot-box",
                None => "lot-box lot-unknown",
            };
            let href = lot_href(&n.lot.gtin, &n.lot.lot);
            let label = n.lot.lot.clone();
            let sub = format!(
                "{} · {}",
                &n.lot.gtin[n.lot.gtin.len().saturating_sub(6)..],
                n.custodian.clone().unwrap_or_default()
            );
            let tip = format!("{} / {}", n.lot.gtin, n.lot.lot);
            view! {
                <a href=href>
                    <g class=class>
                        <title>{tip}</title>
                        <rect x=*x y=*y width=BOX_W height=BOX_H rx="5"></rect>
                        <text x=x + 8.0 y=y + 14.0 class="lot-label">{label}</text>
                        <text x=x + 8.0 y=y + 28.0 class="lot-sub">{sub}</text>
                    </g>
                </a>
            }
        })
        .collect_view();
    let vb = format!("0 0 {w:.0} {h:.0}");
    view! {
        <figure class="trace-graph">
            <svg viewBox=vb width=format!("{w:.0}") height=format!("{h:.0}") role="img" aria-label=t("trace.graph")>
                {edges}
                {boxes}
            </svg>
            {g.truncated.then(|| view! { <figcaption class="muted">{t("trace.graph_truncated")}</figcaption> })}
        </figure>
    }
    .into_any()
}

async fn lot_page(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    Path((gtin, lot_no)): Path<(String, String)>,
    Query(p): Query<Paged>,
) -> Response {
    let r = LotRef {
        gtin: gtin.clone(),
        lot: lot_no.clone(),
    };
    let lot: Option<Lot> = match app.node.state_json(NAME, &r.state_key()).await {
        Ok(l) => l,
        Err(e) => return internal(&v, e),
    };
    let Some(lot) = lot else {
        return v.error(
            StatusCode::NOT_FOUND,
            "state.not_found",
            Some(format!("{gtin} / {lot_no}")),
        );
    };
    let product: Option<Product> = app
        .node
        .state_json(NAME, &product_key(&gtin))
        .await
        .ok()
        .flatten();
    let mut orgs = crate::consumer::OrgNames::default();
    let owner_name = orgs.name(&app.node, &lot.owner).await;
    let custodian_name = orgs.name(&app.node, &lot.custodian).await;
    let started = std::time::Instant::now();
    let graph = match trace(&app.node, &r, GRAPH_MAX_NODES).await {
        Ok(g) => g,
        Err(e) => return internal(&v, e),
    };
    let graph_ms = started.elapsed().as_millis();
    let mut keys = vec![lot_epc_key(&gtin, &lot_no)];
    keys.extend(lot.units.iter().map(|u| unit_epc_key(u)));
    let events = journey(&app, keys, 100).await.unwrap_or_default();
    let readings = readings(&app, &r.state_key(), 1000)
        .await
        .unwrap_or_default();
    let points: Vec<(i64, f64)> = readings
        .iter()
        .filter_map(|x| x.temperature.map(|c| (x.time_ms, c as f64 / 100.0)))
        .collect();
    let band = product
        .as_ref()
        .and_then(|p| p.temperature)
        .map(|r| (r.min as f64 / 100.0, r.max as f64 / 100.0));
    let consumer = consumer_link(&app.public_url, &gtin, Some(&lot_no), None);
    let may_recall = v.user.as_ref().is_some_and(|u| {
        u.has_role(crate::contract::ROLE_REGULATOR)
            || ((u.has_role(ROLE_OPERATOR) || u.has_role(chain_core::system::ROLE_ORG_ADMIN))
                && (u.org == lot.owner || product.as_ref().is_some_and(|p| p.owner == u.org)))
    }) && lot.status != LotStatus::Recalled;
    let event_rows: Vec<Vec<AnyView>> = events
        .iter()
        .rev()
        .map(|e| {
            vec![
                text(format_time(e.event_time_ms.max(0) as u64)),
                text(e.event_type.clone()),
                text(biz_step_label(e.biz_step.as_deref().unwrap_or(""))),
                text(e.biz_location.clone().or(e.read_point.clone()).unwrap_or_default()),
                view! { <a href=format!("/explorer/txs/{}", e.tx_id)>{format!("#{}", e.height)}</a> }.into_any(),
            ]
        })
        .collect();
    let title = format!("{gtin} / {lot_no}");
    let label_url = format!(
        "/traceability/labels.pdf?gtin={}&lot={}",
        urlencode(&gtin),
        urlencode(&lot_no)
    );
    let done = flash(&p.done);
    let csrf = v.csrf.clone();
    let name = product.as_ref().map(|p| p.name.clone()).unwrap_or_default();
    // The custodian's operators may hand the lot over to another organisation.
    let may_hand_over = lot.status != LotStatus::Recalled
        && v.user.as_ref().is_some_and(|u| {
            u.org == lot.custodian
                && (u.has_role(ROLE_OPERATOR) || u.has_role(chain_core::system::ROLE_ORG_ADMIN))
        });
    let certs =
        crate::consumer::certificates(&app, vec![gtin.clone(), format!("{gtin}/{lot_no}")]).await;
    let may_certify = may_operate(&v);
    let other_orgs: Vec<(String, String)> = if may_hand_over {
        app.node
            .state_list(chain_core::system::NAME, b"org/", None, 1000)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, v)| {
                serde_json::from_slice::<chain_core::system::Organisation>(&v).ok()
            })
            .filter(|o| o.id != lot.custodian && o.status == chain_core::system::Status::Active)
            .map(|o| (o.id, o.name))
            .collect()
    } else {
        Vec::new()
    };
    v.page(&title, move || {
        let facts: Vec<(&'static str, AnyView)> = vec![
            ("trace.product", text(name.clone())),
            ("trace.status", status_badge(lot.status)),
            ("trace.owner", text(owner_name.clone())),
            ("trace.custodian", text(custodian_name.clone())),
            ("trace.expiry", text(lot.expiry_ms.map(|e| format_time(e)[..10].to_string()).unwrap_or_default())),
            ("trace.excursions", text(lot.excursion_count.to_string())),
            ("trace.units", text(lot.units.join(", "))),
            ("trace.recall_reason", text(lot.recall.clone().unwrap_or_default())),
        ];
        let recall_form = may_recall.then(|| view! {
            <section class="card danger-zone">
                <h2>{t("trace.recall")}</h2>
                <p class="muted">{t("trace.recall_explain")}</p>
                <form method="post" action="/traceability/recall" class="form">
                    <input type="hidden" name="csrf" value=csrf.clone()/>
                    <input type="hidden" name="gtin" value=lot.gtin.clone()/>
                    <input type="hidden" name="lot" value=lot.lot.clone()/>
                    <div class="field">
                        <label for="f-reason">{t("trace.recall_reason")}</label>
                        <input id="f-reason" name="reason" required=true/>
                    </div>
                    <button type="submit" class="btn danger">{t("trace.recall")}</button>
                </form>
            </section>
        });
        let handover_form = (!other_orgs.is_empty()).then(|| {
            let options = other_orgs
                .iter()
                .map(|(id, name)| view! { <option value=id.clone()>{name.clone()}</option> })
                .collect_view();
            view! {
                <section class="card">
                    <h2>{t("trace.hand_over")}</h2>
                    <p class="muted">{t("trace.hand_over_explain")}</p>
                    <form method="post" action="/traceability/handovers" class="form">
                        <input type="hidden" name="csrf" value=csrf.clone()/>
                        <input type="hidden" name="gtin" value=lot.gtin.clone()/>
                        <input type="hidden" name="lot" value=lot.lot.clone()/>
                        <div class="field">
                            <label for="f-to_org">{t("trace.to_org")}</label>
                            <select id="f-to_org" name="to_org">{options}</select>
                        </div>
                        <button type="submit" class="btn">{t("trace.hand_over")}</button>
                    </form>
                </section>
            }
        });
        let cert_rows: Vec<Vec<AnyView>> = certs
            .iter()
            .map(|c| {
                vec![
                    text(c.kind.clone()),
                    text(c.issuer.clone()),
                    code(c.subject.clone()),
                    text(c.valid_until_ms.map(|v| format_time(v)[..10].to_string()).unwrap_or_default()),
                    view! { <HashText value=c.hash.clone()/> }.into_any(),
                ]
            })
            .collect();
        let cert_form = may_certify.then(|| view! {
            <details class="card">
                <summary>{t("trace.anchor_certificate")}</summary>
                <p class="muted">{t("trace.certificate_explain")}</p>
                <form method="post" action="/traceability/certificates" class="form">
                    <input type="hidden" name="csrf" value=csrf.clone()/>
                    <input type="hidden" name="gtin" value=lot.gtin.clone()/>
                    <input type="hidden" name="lot" value=lot.lot.clone()/>
                    <div class="field">
                        <label for="f-doc">{t("trace.document")}</label>
                        <input id="f-doc" type="file" data-sha256-into="f-hash"/>
                    </div>
                    <div class="field">
                        <label for="f-hash">{t("trace.document_hash")}</label>
                        <input id="f-hash" name="hash" required=true pattern="[0-9a-fA-F]{64}"/>
                    </div>
                    <div class="field">
                        <label for="f-kind">{t("trace.certificate_kind")}</label>
                        <input id="f-kind" name="kind" required=true/>
                    </div>
                    <div class="field">
                        <label for="f-issuer">{t("trace.issuer")}</label>
                        <input id="f-issuer" name="issuer" required=true/>
                    </div>
                    <div class="field">
                        <label for="f-valid">{t("trace.valid_until")}</label>
                        <input id="f-valid" name="valid_until" type="date"/>
                    </div>
                    <div class="field">
                        <label><input type="checkbox" name="whole_product" value="1"/> " " {t("trace.whole_product")}</label>
                    </div>
                    <button type="submit" class="btn">{t("trace.anchor_certificate")}</button>
                </form>
            </details>
        });
        view! {
            <h1>{t("trace.lot")} " " <code>{lot.lot.clone()}</code></h1>
            {subnav("/traceability/lots")}
            {done.map(|f| view! { <Notice tone=Tone::Ok message=t(f)/> })}
            <div class="split">
                <div><Facts rows=facts/></div>
                <div>
                    <Qr data=consumer.clone() caption=t("trace.consumer_page").to_string()/>
                    <p><a href=consumer.clone()>{t("trace.consumer_page")}</a> " · " <a href=label_url.clone()>{t("trace.print_labels")}</a></p>
                </div>
            </div>
            <h2>{t("trace.graph")}</h2>
            <p class="muted">{t("trace.graph_explain")} " " {format!("({} ms)", graph_ms)}</p>
            {graph_svg(&graph)}
            <h2>{t("trace.cold_chain")}</h2>
            <ColdChainChart title=t("trace.temperature").to_string() points=points band=band/>
            <h2>{t("trace.events")}</h2>
            <Table
                cols=vec![Col::new("trace.when"), Col::new("trace.event_type"), Col::new("trace.biz_step"), Col::new("trace.where"), Col::new("explorer.block")]
                rows=event_rows
            />
            <h2>{t("trace.certificates")}</h2>
            <Table
                cols=vec![Col::new("trace.certificate_kind"), Col::new("trace.issuer"), Col::new("trace.subject"), Col::new("trace.valid_until"), Col::new("trace.document_hash")]
                rows=cert_rows
            />
            {cert_form}
            {handover_form}
            {recall_form}
        }
        .into_any()
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RecallForm {
    csrf: String,
    gtin: String,
    lot: String,
    reason: String,
}

async fn recall(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    Form(f): Form<RecallForm>,
) -> Response {
    if let Err(r) = v.check_csrf(&f.csrf) {
        return r;
    }
    let label = match (v.require_user(), v.key_label.clone()) {
        (Ok(_), Some(l)) => l,
        (Err(r), _) => return r,
        _ => return v.error(StatusCode::FORBIDDEN, "auth.forbidden", None),
    };
    if f.reason.trim().is_empty() {
        return v.error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "form.required",
            Some(v.tr("trace.recall_reason").to_string()),
        );
    }
    let id = format!("R-{}", &frontend::auth::random_token()[..12]);
    let args = json!({"id": id, "gtin": f.gtin, "lot": f.lot, "reason": f.reason.trim()});
    match call(&app, &v, &label, "recall", &args).await {
        Ok(_) => Redirect::to(&format!(
            "{}?done=trace.recalled_done",
            lot_href(&f.gtin, &f.lot)
        ))
        .into_response(),
        Err(e) => {
            let (code, message) = chain_message(&e);
            let status = if code == "not_permitted" {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            v.error(
                status,
                "trace.recall_failed",
                Some(format!("{code}: {message}")),
            )
        }
    }
}

// ------------------------------------------------------------------------------ certificates

#[derive(Deserialize, Default)]
#[serde(default)]
struct CertificateForm {
    csrf: String,
    gtin: String,
    lot: String,
    hash: String,
    kind: String,
    issuer: String,
    valid_until: String,
    whole_product: Option<String>,
}

/// Anchors a certificate's SHA-256. The document itself never reaches the server: the page
/// hashes the chosen file in the browser (or the user pastes the digest).
async fn anchor_certificate(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    Form(f): Form<CertificateForm>,
) -> Response {
    let (_user, label) = match operator_action(&v, &f.csrf) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let hash = f.hash.trim().to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return v.error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "trace.err.hash",
            Some(v.tr("trace.document_hash").to_string()),
        );
    }
    if f.kind.trim().is_empty() || f.issuer.trim().is_empty() {
        return v.error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "form.required",
            Some(format!(
                "{} / {}",
                v.tr("trace.certificate_kind"),
                v.tr("trace.issuer")
            )),
        );
    }
    let valid_until = match f.valid_until.trim() {
        "" => None,
        d => match date_end_ms(d) {
            Some(ms) => Some(ms),
            None => return v.error(StatusCode::UNPROCESSABLE_ENTITY, "trace.err.date", None),
        },
    };
    let subject = if f.whole_product.is_some() {
        f.gtin.clone()
    } else {
        format!("{}/{}", f.gtin, f.lot)
    };
    let id = format!("CERT-{}", &hash[..16]);
    let args = json!({"id": id, "kind": f.kind.trim(), "subject": subject, "issuer": f.issuer.trim(),
                      "hash": hash, "valid_until_ms": valid_until});
    match call(&app, &v, &label, "anchor_certificate", &args).await {
        Ok(_) => Redirect::to(&format!(
            "{}?done=trace.certificate_anchored",
            lot_href(&f.gtin, &f.lot)
        ))
        .into_response(),
        Err(e) => {
            let (code, message) = chain_message(&e);
            v.error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "trace.certificate_failed",
                Some(format!("{code}: {message}")),
            )
        }
    }
}

// ------------------------------------------------------------------------------ handovers

#[derive(Deserialize, Default)]
#[serde(default)]
struct OfferForm {
    csrf: String,
    gtin: String,
    lot: String,
    to_org: String,
}

async fn offer_handover(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    Form(f): Form<OfferForm>,
) -> Response {
    let (_user, label) = match operator_action(&v, &f.csrf) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let id = format!("HO-{}", &frontend::auth::random_token()[..12]);
    let args = json!({"id": id, "to_org": f.to_org, "lots": [{"gtin": f.gtin, "lot": f.lot}]});
    match call(&app, &v, &label, "offer_handover", &args).await {
        Ok(_) => Redirect::to(&format!(
            "{}?done=trace.handover_offered",
            lot_href(&f.gtin, &f.lot)
        ))
        .into_response(),
        Err(e) => {
            let (code, message) = chain_message(&e);
            let status = if code == "not_permitted" {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            v.error(
                status,
                "trace.handover_failed",
                Some(format!("{code}: {message}")),
            )
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AnswerForm {
    csrf: String,
    id: String,
    answer: String,
}

async fn answer_handover(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    Form(f): Form<AnswerForm>,
) -> Response {
    let (_user, label) = match operator_action(&v, &f.csrf) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (method, done) = match f.answer.as_str() {
        "accept" => ("accept_handover", "trace.handover_accepted"),
        "reject" => ("reject_handover", "trace.handover_rejected"),
        "cancel" => ("cancel_handover", "trace.handover_cancelled"),
        _ => return v.error(StatusCode::BAD_REQUEST, "state.error", None),
    };
    match call(&app, &v, &label, method, &json!({"id": f.id})).await {
        Ok(_) => Redirect::to(&format!("/traceability/handovers?done={done}")).into_response(),
        Err(e) => {
            let (code, message) = chain_message(&e);
            let status = if code == "not_permitted" {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            v.error(
                status,
                "trace.handover_failed",
                Some(format!("{code}: {message}")),
            )
        }
    }
}

async fn handovers(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    Query(p): Query<Paged>,
) -> Response {
    let user = match v.require_user() {
        Ok(u) => u.clone(),
        Err(r) => return r,
    };
    let rows = match trace_handover::Entity::find()
        .filter(
            sea_orm::Condition::any()
                .add(trace_handover::Column::FromOrg.eq(user.org.clone()))
                .add(trace_handover::Column::ToOrg.eq(user.org.clone())),
        )
        .order_by_desc(trace_handover::Column::OfferedHeight)
        .limit(100)
        .all(&app.db)
        .await
    {
        Ok(r) => r,
        Err(e) => return internal(&v, e),
    };
    let mut orgs = crate::consumer::OrgNames::default();
    let may_act = user.has_role(ROLE_OPERATOR) || user.has_role(chain_core::system::ROLE_ORG_ADMIN);
    let csrf = v.csrf.clone();
    let mut table = Vec::with_capacity(rows.len());
    for h in &rows {
        let detail: Option<Handover> = app
            .node
            .state_json(NAME, &handover_key(&h.id))
            .await
            .ok()
            .flatten();
        let lots = detail
            .as_ref()
            .map(|d| {
                d.lots
                    .iter()
                    .map(|l| {
                        let label = format!("{} / {}", l.gtin, l.lot);
                        view! { <a href=lot_href(&l.gtin, &l.lot)>{label}</a> " " }
                    })
                    .collect_view()
                    .into_any()
            })
            .unwrap_or_else(|| text(""));
        let incoming = h.to_org == user.org;
        let open = h.status == "offered";
        let buttons: Vec<(&'static str, &'static str)> = match (open && may_act, incoming) {
            (true, true) => vec![("accept", "trace.accept"), ("reject", "trace.reject")],
            (true, false) => vec![("cancel", "trace.cancel")],
            _ => vec![],
        };
        let actions = buttons
            .into_iter()
            .map(|(answer, label)| {
                let class = if answer == "accept" { "btn" } else { "btn secondary" };
                view! {
                    <form method="post" action="/traceability/handovers/answer" class="inline">
                        <input type="hidden" name="csrf" value=csrf.clone()/>
                        <input type="hidden" name="id" value=h.id.clone()/>
                        <input type="hidden" name="answer" value=answer/>
                        <button type="submit" class=class data-answer=answer data-handover=h.id.clone()>{t(label)}</button>
                    </form>
                }
            })
            .collect_view();
        let tone = match h.status.as_str() {
            "accepted" => Tone::Ok,
            "offered" => Tone::Info,
            _ => Tone::Muted,
        };
        let status_label = match h.status.as_str() {
            "offered" => t("trace.handover.offered"),
            "accepted" => t("trace.handover.accepted"),
            "rejected" => t("trace.handover.rejected"),
            _ => t("trace.handover.cancelled"),
        };
        table.push(vec![
            code(h.id.clone()),
            text(orgs.name(&app.node, &h.from_org).await),
            text(orgs.name(&app.node, &h.to_org).await),
            lots,
            view! { <Badge tone=tone label=status_label/> }.into_any(),
            view! { <span class="actions">{actions}</span> }.into_any(),
        ]);
    }
    let done = flash(&p.done);
    v.page(v.tr("trace.handovers"), move || {
        view! {
            <h1>{t("trace.handovers")}</h1>
            {subnav("/traceability/handovers")}
            {done.map(|f| view! { <Notice tone=Tone::Ok message=t(f)/> })}
            <p class="muted">{t("trace.handovers_explain")}</p>
            <Table
                cols=vec![Col::new("trace.handover_id"), Col::new("trace.from_org"), Col::new("trace.to_org"), Col::new("trace.lots"), Col::new("trace.status"), Col::new("trace.action")]
                rows=table
            />
        }
        .into_any()
    })
}

// ------------------------------------------------------------------------------ events

#[derive(Deserialize, Default)]
#[serde(default)]
struct EventsQuery {
    before: Option<i64>,
    #[serde(rename = "type")]
    event_type: Option<String>,
}

async fn events(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    Query(q): Query<EventsQuery>,
) -> Response {
    let mut find = trace_event::Entity::find();
    if let Some(b) = q.before {
        find = find.filter(trace_event::Column::Seq.lt(b));
    }
    if let Some(ty) = q.event_type.clone().filter(|t| !t.is_empty()) {
        find = find.filter(trace_event::Column::EventType.eq(ty));
    }
    let rows = match find
        .order_by_desc(trace_event::Column::Seq)
        .limit(PER_PAGE + 1)
        .all(&app.db)
        .await
    {
        Ok(r) => r,
        Err(e) => return internal(&v, e),
    };
    let next = (rows.len() as u64 > PER_PAGE).then(|| rows[PER_PAGE as usize - 1].seq);
    let table: Vec<Vec<AnyView>> = rows
        .iter()
        .take(PER_PAGE as usize)
        .map(|e| {
            let id = e.event_id.clone().unwrap_or_default();
            vec![
                text(format_time(e.event_time_ms.max(0) as u64)),
                text(e.event_type.clone()),
                text(e.action.clone().unwrap_or_default()),
                text(biz_step_label(e.biz_step.as_deref().unwrap_or(""))),
                text(e.biz_location.clone().or(e.read_point.clone()).unwrap_or_default()),
                view! { <HashText value=id/> }.into_any(),
                view! { <a href=format!("/explorer/txs/{}", e.tx_id)>{format!("#{}", e.height)}</a> }.into_any(),
            ]
        })
        .collect();
    let ty = q.event_type.unwrap_or_default();
    v.page(v.tr("trace.events"), move || {
        let types = ["", "ObjectEvent", "AggregationEvent", "TransformationEvent", "TransactionEvent", "AssociationEvent"]
            .into_iter()
            .map(|x| {
                let label = if x.is_empty() { t("trace.all_types").to_string() } else { x.to_string() };
                view! { <option value=x selected=x == ty>{label}</option> }
            })
            .collect_view();
        view! {
            <h1>{t("trace.events")}</h1>
            {subnav("/traceability/events")}
            <form method="get" action="/traceability/events" class="search">
                <label for="f-type" class="sr-only">{t("trace.event_type")}</label>
                <select id="f-type" name="type">{types}</select>
                <button type="submit" class="btn">{t("common.search")}</button>
            </form>
            <Table
                cols=vec![Col::new("trace.when"), Col::new("trace.event_type"), Col::new("trace.action"), Col::new("trace.biz_step"), Col::new("trace.where"), Col::new("trace.event_id"), Col::new("explorer.block")]
                rows=table
            />
            {next.map(|n| view! { <p><a class="btn secondary" href=format!("/traceability/events?before={n}")>{t("common.next")}</a></p> })}
        }
        .into_any()
    })
}

// ------------------------------------------------------------------------------ locations

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct LocationForm {
    csrf: String,
    gln: String,
    name: String,
    kind: String,
    address: String,
    country: String,
}

#[derive(Default, Clone, Copy)]
struct LocationErrors {
    gln: Option<&'static str>,
    name: Option<&'static str>,
    country: Option<&'static str>,
}

async fn locations(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    Query(p): Query<Paged>,
) -> Response {
    locations_page(
        &app,
        &v,
        StatusCode::OK,
        LocationForm::default(),
        LocationErrors::default(),
        None,
        flash(&p.done),
        p.after,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn locations_page(
    app: &TraceShared,
    v: &Viewer,
    status: StatusCode,
    form: LocationForm,
    errors: LocationErrors,
    refusal: Option<String>,
    done: Option<&'static str>,
    after: Option<String>,
) -> Response {
    let (list, next) = match state_page::<Location>(app, v, "location/", after.as_deref()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let rows: Vec<Vec<AnyView>> = list
        .iter()
        .map(|l| {
            vec![
                code(l.gln.clone()),
                text(l.name.clone()),
                text(l.kind.clone()),
                text(l.country.clone()),
                text(l.owner.clone()),
            ]
        })
        .collect();
    let can_act = may_operate(v);
    v.page_with_status(status, v.tr("trace.locations"), move || {
        let form_view = can_act.then(|| view! {
            <h2>{t("trace.add_location")}</h2>
            {refusal.clone().map(|r| view! { <Notice tone=Tone::Bad message=r/> })}
            <PostForm action="/traceability/locations">
                <Field name="gln" label="trace.gln" value=form.gln.clone() error=errors.gln required=true/>
                <Field name="name" label="trace.name" value=form.name.clone() error=errors.name required=true/>
                <Field name="kind" label="trace.location_kind" value=form.kind.clone()/>
                <Field name="address" label="trace.address" value=form.address.clone()/>
                <Field name="country" label="trace.origin_country" value=form.country.clone() error=errors.country/>
                <button type="submit">{t("trace.add_location")}</button>
            </PostForm>
        });
        view! {
            <h1>{t("trace.locations")}</h1>
            {subnav("/traceability/locations")}
            {done.map(|f| view! { <Notice tone=Tone::Ok message=t(f)/> })}
            <Table
                cols=vec![Col::new("trace.gln"), Col::new("trace.name"), Col::new("trace.location_kind"), Col::new("trace.origin_country"), Col::new("trace.owner")]
                rows=rows
            />
            {next_link("/traceability/locations", next.clone())}
            {form_view}
        }
        .into_any()
    })
}

async fn add_location(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    Form(f): Form<LocationForm>,
) -> Response {
    let (_user, label) = match operator_action(&v, &f.csrf) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut errors = LocationErrors::default();
    let mut detail = None;
    let gln = match crate::gs1::Gln::parse(f.gln.trim()) {
        Ok(g) => Some(g.as_str().to_string()),
        Err(e) => {
            errors.gln = gs1_field_error(e.code()).or(Some("trace.err.gtin_format"));
            detail = Some(e.to_string());
            None
        }
    };
    if f.name.trim().is_empty() {
        errors.name = Some("form.required");
    }
    let country = f.country.trim().to_uppercase();
    if !(country.is_empty()
        || country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase()))
    {
        errors.country = Some("trace.err.country");
    }
    if errors.gln.is_some() || errors.name.is_some() || errors.country.is_some() {
        return locations_page(
            &app,
            &v,
            StatusCode::UNPROCESSABLE_ENTITY,
            f,
            errors,
            detail,
            None,
            None,
        )
        .await;
    }
    let args = json!({"gln": gln, "name": f.name.trim(), "kind": f.kind.trim(), "address": f.address.trim(), "country": country});
    match call(&app, &v, &label, "register_location", &args).await {
        Ok(_) => Redirect::to("/traceability/locations?done=trace.location_added").into_response(),
        Err(e) => {
            let (code, message) = chain_message(&e);
            if code == "location_exists" || code == "not_permitted" {
                errors.gln = Some("trace.err.gtin_taken");
            }
            locations_page(
                &app,
                &v,
                StatusCode::UNPROCESSABLE_ENTITY,
                f,
                errors,
                Some(format!("{code}: {message}")),
                None,
                None,
            )
            .await
        }
    }
}

// ------------------------------------------------------------------------------ alerts

async fn alerts(Extension(app): Extension<TraceShared>, v: Viewer) -> Response {
    let rows = match trace_alert::Entity::find()
        .order_by_desc(trace_alert::Column::Id)
        .limit(200)
        .all(&app.db)
        .await
    {
        Ok(r) => r,
        Err(e) => return internal(&v, e),
    };
    let rows = alert_rows(&rows);
    v.page(v.tr("trace.alerts"), move || {
        view! {
            <h1>{t("trace.alerts")} " " <span id="live-alerts-status" class="live-dot" aria-hidden="true"></span></h1>
            {subnav("/traceability/alerts")}
            <p class="muted">{t("trace.alerts_explain")}</p>
            {alert_table(rows, true)}
        }
        .into_any()
    })
}

/// `GET /traceability/alerts/stream`: Server-Sent Events of new alerts — excursions and recalls
/// as blocks commit them, counterfeit suspicions as scans raise them — in the node stream's
/// `contract_event` shape (`height` is null for alerts that are not on chain).
async fn alert_stream(
    Extension(app): Extension<TraceShared>,
) -> axum::response::sse::Sse<
    impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let blocks = app.node.subscribe();
    let scans = app.scans.subscribe();
    let stream = futures::stream::unfold((blocks, scans), |(mut blocks, mut scans)| async move {
        loop {
            let events: Vec<serde_json::Value> = tokio::select! {
                b = blocks.recv() => match b {
                    Ok(b) => b
                        .events
                        .iter()
                        .filter(|(_, e)| e.contract == NAME && e.kind == "alert")
                        .filter_map(|(_, e)| serde_json::from_slice::<serde_json::Value>(&e.data).ok())
                        .map(|data| json!({"height": b.height, "contract": NAME, "kind": "alert", "data": data}))
                        .collect(),
                    // A slow page missed blocks: it still has the table as rendered.
                    Err(RecvError::Lagged(_)) => Vec::new(),
                    Err(RecvError::Closed) => return None,
                },
                s = scans.recv() => match s {
                    Ok(data) => vec![json!({"height": null, "contract": NAME, "kind": "alert", "data": data})],
                    Err(RecvError::Lagged(_)) => Vec::new(),
                    Err(RecvError::Closed) => return None,
                },
            };
            if !events.is_empty() {
                let out: Vec<Result<Event, std::convert::Infallible>> = events
                    .into_iter()
                    .map(|e| Ok(Event::default().event("contract_event").data(e.to_string())))
                    .collect();
                return Some((futures::stream::iter(out), (blocks, scans)));
            }
        }
    });
    Sse::new(futures::StreamExt::flatten(stream))
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
}

// ------------------------------------------------------------------------------ labels

#[derive(Deserialize, Default)]
#[serde(default)]
struct LabelQuery {
    gtin: String,
    lot: Option<String>,
    /// Serial numbers: a list (`A1,A2`) or a numeric range (`1-24`).
    serials: Option<String>,
}

/// Serials from `1-24` or `A1,A2,A3`.
fn parse_serials(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(vec![]);
    }
    if let Some((a, b)) = s.split_once('-')
        && let (Ok(a), Ok(b)) = (a.trim().parse::<u64>(), b.trim().parse::<u64>())
    {
        if b < a || b - a >= labels::MAX_LABELS as u64 {
            return Err(format!("a range of at most {} serials", labels::MAX_LABELS));
        }
        return Ok((a..=b).map(|n| n.to_string()).collect());
    }
    let list: Vec<String> = s
        .split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect();
    for x in &list {
        SerialNumber::parse(x).map_err(|e| e.to_string())?;
    }
    Ok(list)
}

async fn label_sheet(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    Query(q): Query<LabelQuery>,
) -> Response {
    if let Err(r) = v.require_user() {
        return r;
    }
    let gtin = match Gtin::parse(q.gtin.trim()) {
        Ok(g) => g.as_str().to_string(),
        Err(e) => {
            return v.error(
                StatusCode::BAD_REQUEST,
                "trace.bad_link",
                Some(e.to_string()),
            );
        }
    };
    let product: Option<Product> = app
        .node
        .state_json(NAME, &product_key(&gtin))
        .await
        .ok()
        .flatten();
    let lot: Option<Lot> = match &q.lot {
        Some(l) => app
            .node
            .state_json(NAME, &lot_key(&gtin, l))
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let serials = match parse_serials(q.serials.as_deref().unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return v.error(StatusCode::BAD_REQUEST, "state.error", Some(e)),
    };
    let expiry = lot
        .as_ref()
        .and_then(|l| l.expiry_ms)
        .map(|e| format_time(e)[..10].to_string());
    let name = product.map(|p| p.name).unwrap_or_default();
    let make = |serial: Option<String>| Label {
        url: consumer_link(&app.public_url, &gtin, q.lot.as_deref(), serial.as_deref()),
        product: name.clone(),
        gtin: gtin.clone(),
        lot: q.lot.clone(),
        serial,
        expiry: expiry.clone(),
    };
    let list: Vec<Label> = if serials.is_empty() {
        vec![make(None)]
    } else {
        serials.into_iter().map(|s| make(Some(s))).collect()
    };
    let title = format!("{gtin} {}", q.lot.clone().unwrap_or_default());
    match tokio::task::spawn_blocking(move || labels::label_sheet_pdf(&title, &list)).await {
        Ok(Ok(pdf)) => {
            let mut r = pdf.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/pdf"),
            );
            r.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("inline; filename=\"labels.pdf\""),
            );
            r
        }
        Ok(Err(e)) => v.error(
            StatusCode::BAD_REQUEST,
            "state.error",
            Some(format!("{}: {e}", e.code())),
        ),
        Err(e) => internal(&v, e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct QrQuery {
    data: String,
}

async fn qr_png(Query(q): Query<QrQuery>) -> Response {
    if q.data.is_empty() || q.data.len() > QR_MAX_DATA {
        return (
            StatusCode::BAD_REQUEST,
            format!("data: 1 to {QR_MAX_DATA} bytes"),
        )
            .into_response();
    }
    match labels::qr_png(&q.data, 6) {
        Ok(png) => {
            let mut r = png.into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            r
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{}: {e}", e.code())).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_ranges_and_lists() {
        assert_eq!(parse_serials("1-3").unwrap(), vec!["1", "2", "3"]);
        assert_eq!(parse_serials("A1, A2").unwrap(), vec!["A1", "A2"]);
        assert!(parse_serials("1-5000").is_err());
        assert!(parse_serials("A 1").is_err());
    }

    #[test]
    fn consumer_links_are_digital_links() {
        assert_eq!(
            consumer_link(
                "http://127.0.0.1:8080",
                "9521234000013",
                Some("L/1"),
                Some("7")
            ),
            "http://127.0.0.1:8080/01/09521234000013/10/L%2F1/21/7"
        );
    }
}
