//! The EPCIS 2.0 REST binding under `/epcis`: capture (`POST /epcis/capture`, capture jobs) and
//! query (`GET /epcis/events`, `GET /epcis/events/{eventID}`).
//!
//! Callers authenticate with HTTP Basic (their web user) or a signed-in session; capture signs
//! the `trace.capture` transactions with the caller's custodial key, so the chain records which
//! member of which organisation captured each event. Errors are RFC 7807 problem documents
//! whose `type` is the EPCIS exception (`epcisException:ValidationException`, …) and which add
//! a stable `code` and, for invalid documents, the JSON `pointer` of the first offending field.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use chain_core::node::now_ms;
use frontend::web::{Shared, Viewer};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde_json::{Value, json};

use crate::app::TraceShared;
use crate::contract::{NAME, ROLE_OPERATOR};
use crate::epcis::hash::ignore_fields_of;
use crate::epcis::query::{EpcPattern, EventQuery, OrderBy, OrderDirection, index_keys};
use crate::epcis::validate::split_events;
use crate::ids;
use crate::store::{trace_capture, trace_event, trace_event_epc};

/// The standard JSON-LD context of EPCIS 2.0 documents.
pub const EPCIS_CONTEXT: &str = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld";
/// Largest capture body (bytes).
pub const MAX_CAPTURE_BYTES: usize = 64 * 1024 * 1024;
/// Room for a transaction's envelope (keys, signature, chain id, method) next to its arguments.
const TX_ENVELOPE: usize = 2 * 1024;
/// And under this many events, so one transaction's execution stays short.
const TX_EVENTS: usize = 2_000;
const DEFAULT_PER_PAGE: u32 = 100;
const MAX_PER_PAGE: u32 = 1_000;

/// An RFC 7807 problem document with the EPCIS exception type.
pub fn problem(status: StatusCode, exception: &str, code: &str, title: String) -> Response {
    problem_with(status, exception, code, title, None)
}

fn problem_with(
    status: StatusCode,
    exception: &str,
    code: &str,
    title: String,
    pointer: Option<String>,
) -> Response {
    let mut body = json!({
        "type": format!("epcisException:{exception}"),
        "title": title,
        "status": status.as_u16(),
        "code": code,
    });
    if let Some(p) = pointer {
        body["pointer"] = Value::String(p);
    }
    let mut r = (status, Json(body)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

fn epcis_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("GS1-EPCIS-Version", HeaderValue::from_static("2.0.0"));
    h.insert("GS1-CBV-Version", HeaderValue::from_static("2.0.0"));
    r
}

// ------------------------------------------------------------------------------ caller

/// Who is calling, and the keystore label of the key that signs for them.
struct Caller {
    roles: Vec<String>,
    key_label: String,
}

fn unauthorized() -> Response {
    let mut r = problem(
        StatusCode::UNAUTHORIZED,
        "SecurityException",
        "unauthenticated",
        "sign in, or send HTTP Basic credentials of a Trellis user".into(),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Trellis EPCIS\", charset=\"UTF-8\""),
    );
    r
}

async fn caller(v: &Viewer, headers: &HeaderMap) -> Result<Caller, Response> {
    if let (Some(u), Some(label)) = (&v.user, &v.key_label) {
        return Ok(Caller {
            roles: u.roles.clone(),
            key_label: label.clone(),
        });
    }
    let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
    else {
        return Err(unauthorized());
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Err(unauthorized());
    };
    let state = &v.state;
    let cache_key = app_cache_key(user, password);
    let cached = BASIC_CACHE
        .lock()
        .get(&cache_key)
        .filter(|(_, _, at)| at.elapsed() < BASIC_CACHE_TTL)
        .map(|(member, label, _)| (member.clone(), label.clone()));
    let (member_id, key_label) = match cached {
        Some(x) => x,
        None => {
            // Only password checks count against the sign-in limit (and cost Argon2 time).
            if !state.limiter.allow(v.ip, user) {
                let mut r = problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    "SecurityException",
                    "rate_limited",
                    "too many sign-in attempts; wait a minute".into(),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
                return Err(r);
            }
            match state.users.authenticate(user, password.to_string()).await {
                Ok(Ok(u)) => {
                    let mut cache = BASIC_CACHE.lock();
                    if cache.len() >= 10_000 {
                        cache.clear();
                    }
                    cache.insert(
                        cache_key,
                        (
                            u.member.clone(),
                            u.key_label.clone(),
                            std::time::Instant::now(),
                        ),
                    );
                    (u.member, u.key_label)
                }
                Ok(Err(_)) => return Err(unauthorized()),
                Err(e) => {
                    tracing::error!("basic authentication failed: {e}");
                    return Err(problem(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "ImplementationException",
                        "internal",
                        "the user store could not be read".into(),
                    ));
                }
            }
        }
    };
    // Roles come from the chain on every request, so a revoked member loses access at once.
    let member: Option<chain_core::system::Member> = state
        .node
        .state_json(chain_core::system::NAME, &format!("member/{member_id}"))
        .await
        .ok()
        .flatten();
    let roles = member
        .filter(|m| m.status == chain_core::system::Status::Active)
        .map(|m| m.roles)
        .unwrap_or_default();
    Ok(Caller { roles, key_label })
}

/// Verified Basic credentials, by a salted hash of user and password, for a few minutes: API
/// clients send them with every request, and an Argon2 check each time would cost more than
/// the request. A changed password takes effect within the lifetime of an entry.
const BASIC_CACHE_TTL: Duration = Duration::from_secs(300);

type BasicCache = HashMap<[u8; 32], (String, String, std::time::Instant)>;

static BASIC_CACHE: std::sync::LazyLock<parking_lot::Mutex<BasicCache>> =
    std::sync::LazyLock::new(|| parking_lot::Mutex::new(HashMap::new()));

static BASIC_SALT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(frontend::auth::random_token);

fn app_cache_key(user: &str, password: &str) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update(BASIC_SALT.as_bytes());
    h.update(user.as_bytes());
    h.update([0]);
    h.update(password.as_bytes());
    h.finalize().into()
}

// ------------------------------------------------------------------------------ capture

/// Checks what the contract would refuse, so that a document the chain cannot take is refused
/// whole before anything is submitted: event hash inputs, index fields and GS1 identifiers.
fn precheck_event(
    event: &Value,
    context: &Value,
    ignore: &[String],
) -> Result<(), (String, String, String)> {
    let fail = |field: &str, e: chain_core::contract::ContractError| match e {
        chain_core::contract::ContractError::Rejected { code, message } => {
            (field.to_string(), code, message)
        }
        chain_core::contract::ContractError::Fatal(m) => (field.to_string(), "internal".into(), m),
    };
    ids::event_hash_id(event, context, ignore).map_err(|e| fail("", e))?;
    index_keys(event).map_err(|e| ("".to_string(), e.code().to_string(), e.to_string()))?;
    for field in ["epcList", "childEPCs", "inputEPCList", "outputEPCList"] {
        if let Some(list) = event[field].as_array() {
            for (i, e) in list.iter().enumerate() {
                if let Some(s) = e.as_str() {
                    ids::parse_epc(s).map_err(|err| fail(&format!("/{field}/{i}"), err))?;
                }
            }
        }
    }
    if let Some(p) = event["parentID"].as_str() {
        ids::parse_epc(p).map_err(|err| fail("/parentID", err))?;
    }
    for field in [
        "quantityList",
        "childQuantityList",
        "inputQuantityList",
        "outputQuantityList",
    ] {
        if let Some(list) = event[field].as_array() {
            for (i, q) in list.iter().enumerate() {
                if let Some(s) = q["epcClass"].as_str() {
                    ids::parse_epc(s)
                        .map_err(|err| fail(&format!("/{field}/{i}/epcClass"), err))?;
                }
            }
        }
    }
    if let Some(lot) = event["ilmd"]["cbvmda:lotNumber"]
        .as_str()
        .or_else(|| event["ilmd"]["lotNumber"].as_str())
    {
        ids::check_lot(lot).map_err(|err| fail("/ilmd/cbvmda:lotNumber", err))?;
    }
    Ok(())
}

/// Splits events (as JSON text) into transaction argument lists within the size budget.
fn chunk_events(events: Vec<String>, budget: usize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    // The list's brackets.
    let mut size = 2usize;
    for e in events {
        let len = encoded_len(&e);
        if !cur.is_empty() && (size + len > budget || cur.len() >= TX_EVENTS) {
            out.push(std::mem::take(&mut cur));
            size = 2;
        }
        size += len;
        cur.push(e);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Bytes an event's text takes inside the transaction's JSON arguments: as a JSON string its
/// quotes and backslashes are escaped, plus the separating comma.
fn encoded_len(text: &str) -> usize {
    let extra: usize = text
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' => 1,
            0..0x20 => 5,
            _ => 0,
        })
        .sum();
    text.len() + extra + 3
}

fn event_pointer(doc: &Value, i: usize) -> String {
    if doc.get("epcisBody").is_none() {
        return String::new();
    }
    if doc["epcisBody"].get("queryResults").is_some() {
        format!("/epcisBody/queryResults/resultsBody/eventList/{i}")
    } else if doc["epcisBody"].get("eventList").is_some() {
        format!("/epcisBody/eventList/{i}")
    } else {
        "/epcisBody/event".to_string()
    }
}

async fn capture(
    State(state): State<Shared>,
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = match caller(&v, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !who
        .roles
        .iter()
        .any(|r| r == ROLE_OPERATOR || r == chain_core::system::ROLE_ORG_ADMIN)
    {
        return problem(
            StatusCode::FORBIDDEN,
            "SecurityException",
            "not_permitted",
            format!("capturing needs the role `{ROLE_OPERATOR}` or `org_admin`"),
        );
    }
    let doc: Value = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => {
            return problem_with(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "epcis_malformed_json",
                format!("the body is not JSON: {e}"),
                Some(String::new()),
            );
        }
    };
    if let Some(validator) = &app.validator {
        let checked = {
            let validator = validator.clone();
            let doc = doc.clone();
            tokio::task::spawn_blocking(move || validator.validate_capture(&doc)).await
        };
        match checked {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return problem_with(
                    StatusCode::BAD_REQUEST,
                    "ValidationException",
                    e.code(),
                    e.reason.clone(),
                    Some(e.pointer.clone()),
                );
            }
            Err(e) => {
                return problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ImplementationException",
                    "internal",
                    e.to_string(),
                );
            }
        }
    }
    let events = split_events(&doc);
    if events.len() > app.max_capture_events {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "CaptureLimitExceededException",
            "epcis_capture_limit_exceeded",
            format!(
                "a capture holds at most {} events; split the document",
                app.max_capture_events
            ),
        );
    }
    let context = doc.get("@context").cloned().unwrap_or(Value::Null);
    let ignore = ignore_fields_of(&doc);
    let mut texts = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        if let Err((field, code, reason)) = precheck_event(event, &context, &ignore) {
            return problem_with(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                &code,
                reason,
                Some(format!("{}{field}", event_pointer(&doc, i))),
            );
        }
        texts.push(event.to_string());
    }
    let capture_id = frontend::auth::random_token()[..32].to_string();
    let budget = app
        .max_tx_bytes
        .saturating_sub(TX_ENVELOPE + context.to_string().len() + 200);
    if let Some(i) = texts.iter().position(|t| encoded_len(t) > budget) {
        return problem_with(
            StatusCode::PAYLOAD_TOO_LARGE,
            "CaptureLimitExceededException",
            "epcis_event_too_large",
            format!("the event is larger than one transaction may be ({budget} bytes)"),
            Some(event_pointer(&doc, i)),
        );
    }
    let chunks = chunk_events(texts, budget);
    let calls: Vec<(String, String, Vec<u8>)> = chunks
        .into_iter()
        .map(|events| {
            let args = json!({
                "capture_id": capture_id,
                "context": context,
                "ignore_fields": ignore,
                "events": events,
            });
            (
                NAME.to_string(),
                "capture".to_string(),
                args.to_string().into_bytes(),
            )
        })
        .collect();
    let tx_count = calls.len();
    let now = now_ms() as i64;
    let job = trace_capture::ActiveModel {
        id: Set(capture_id.clone()),
        created_ms: Set(now),
        finished_ms: Set(None),
        events: Set(events.len() as i64),
        txs: Set(tx_count as i32),
        txs_done: Set(0),
        stored: Set(0),
        duplicates: Set(0),
        status: Set("running".into()),
        error_code: Set(None),
        error_message: Set(None),
        by: Set(who.key_label.clone()),
    };
    if let Err(e) = trace_capture::Entity::insert(job).exec(&app.db).await {
        tracing::error!("recording capture job: {e}");
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ImplementationException",
            "internal",
            "the capture job could not be recorded".into(),
        );
    }
    let submitted = if calls.is_empty() {
        Ok(Vec::new())
    } else {
        state
            .custody
            .submit_many(&state.node, &who.key_label, calls)
            .await
    };
    let tx_ids = match submitted {
        Ok(ids) => ids,
        Err((0, e)) => {
            // Nothing reached the chain: the capture is refused as a whole.
            let _ = trace_capture::Entity::delete_by_id(capture_id)
                .exec(&app.db)
                .await;
            let (code, message) = match e {
                frontend::auth::CallError::Chain { code, message } => (code, message),
                frontend::auth::CallError::Key(m) => ("key_unavailable".to_string(), m),
            };
            let status = if code == "mempool_full" {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            let mut r = problem(status, "ImplementationException", &code, message);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            return r;
        }
        Err((i, e)) => {
            // Part of a large document was admitted: the job reports the failure; the admitted
            // part stays captured (events are idempotent, so the client may capture it again).
            let _ = finish_job(
                &app,
                &capture_id,
                "failed",
                Some((
                    "partial".into(),
                    format!("transaction {i} of {tx_count} was refused: {e}"),
                )),
            )
            .await;
            let mut r =
                (StatusCode::ACCEPTED, Json(json!({"captureID": capture_id}))).into_response();
            set_location(&mut r, &capture_id);
            return epcis_headers(r);
        }
    };
    tokio::spawn(follow_job(app.clone(), capture_id.clone(), tx_ids));
    let mut r = (
        StatusCode::ACCEPTED,
        Json(json!({"captureID": capture_id, "events": events.len(), "transactions": tx_count})),
    )
        .into_response();
    set_location(&mut r, &capture_id);
    epcis_headers(r)
}

fn set_location(r: &mut Response, id: &str) {
    if let Ok(v) = HeaderValue::from_str(&format!("/epcis/capture/{id}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
}

async fn finish_job(
    app: &TraceShared,
    id: &str,
    status: &str,
    error: Option<(String, String)>,
) -> Result<(), sea_orm::DbErr> {
    let Some(job) = trace_capture::Entity::find_by_id(id.to_string())
        .one(&app.db)
        .await?
    else {
        return Ok(());
    };
    let mut m: trace_capture::ActiveModel = job.into();
    m.status = Set(status.into());
    m.finished_ms = Set(Some(now_ms() as i64));
    if let Some((code, message)) = error {
        m.error_code = Set(Some(code));
        m.error_message = Set(Some(message));
    }
    trace_capture::Entity::update(m).exec(&app.db).await?;
    Ok(())
}

/// Waits for a capture's transactions to be committed and indexed, then closes the job.
async fn follow_job(app: TraceShared, id: String, tx_ids: Vec<chain_core::crypto::Digest>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let mut stored = 0i64;
    let mut duplicates = 0i64;
    let mut max_height = 0u64;
    let mut error = None;
    for (i, tx_id) in tx_ids.iter().enumerate() {
        let row = loop {
            match app.node.store.tx(&tx_id.bytes).await {
                Ok(Some(row)) => break Some(row),
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Ok(None) => break None,
                Err(e) => {
                    tracing::error!("capture job {id}: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let Some(row) = row else {
            error = Some((
                "timeout".to_string(),
                format!("transaction {i} was not committed in time"),
            ));
            break;
        };
        max_height = max_height.max(row.height as u64);
        let receipt = chain_core::types::Receipt::decode(&row.receipt);
        match receipt {
            Ok(rc) if row.ok => {
                for ev in rc.events.iter().filter(|e| e.kind == "captured") {
                    if let Ok(d) = serde_json::from_slice::<Value>(&ev.data) {
                        stored += d["stored"].as_i64().unwrap_or(0);
                        duplicates += d["duplicates"].as_i64().unwrap_or(0);
                    }
                }
            }
            Ok(rc) => {
                error = Some((rc.code.clone(), rc.message.clone()));
                break;
            }
            Err(e) => {
                error = Some(("internal".into(), e.to_string()));
                break;
            }
        }
        let update = trace_capture::ActiveModel {
            id: Set(id.clone()),
            txs_done: Set(i as i32 + 1),
            stored: Set(stored),
            duplicates: Set(duplicates),
            ..Default::default()
        };
        let _ = trace_capture::Entity::update(update).exec(&app.db).await;
    }
    // The job succeeds only once its events can be queried.
    if error.is_none()
        && !app
            .indexed
            .wait_for(max_height, Duration::from_secs(60))
            .await
    {
        error = Some((
            "timeout".into(),
            "the events were committed but not indexed in time".into(),
        ));
    }
    let status = if error.is_none() { "success" } else { "failed" };
    if let Err(e) = finish_job(&app, &id, status, error).await {
        tracing::error!("closing capture job {id}: {e}");
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn job_json(j: &trace_capture::Model) -> Value {
    let mut v = json!({
        "captureID": j.id,
        "createdAt": rfc3339(j.created_ms),
        "running": j.status == "running",
        "success": j.status == "success",
        "captureErrorBehaviour": "rollback",
        "events": j.events,
        "eventsStored": j.stored,
        "duplicates": j.duplicates,
        "transactions": j.txs,
        "transactionsCommitted": j.txs_done,
        "errors": [],
    });
    if let Some(f) = j.finished_ms {
        v["finishedAt"] = Value::String(rfc3339(f));
    }
    if let (Some(code), Some(msg)) = (&j.error_code, &j.error_message) {
        v["errors"] = json!([{
            "type": "epcisException:CaptureLimitExceededException",
            "title": msg,
            "status": 400,
            "code": code,
        }]);
        if code != "epcis_capture_limit_exceeded" {
            v["errors"][0]["type"] = Value::String("epcisException:ValidationException".into());
        }
    }
    v
}

async fn capture_job(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = caller(&v, &headers).await {
        return r;
    }
    match trace_capture::Entity::find_by_id(id.clone())
        .one(&app.db)
        .await
    {
        Ok(Some(j)) => epcis_headers(Json(job_json(&j)).into_response()),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "NoSuchResourceException",
            "not_found",
            format!("no capture job {id}"),
        ),
        Err(e) => internal(e),
    }
}

async fn capture_jobs(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = caller(&v, &headers).await {
        return r;
    }
    match trace_capture::Entity::find()
        .order_by_desc(trace_capture::Column::CreatedMs)
        .limit(100)
        .all(&app.db)
        .await
    {
        Ok(jobs) => {
            epcis_headers(Json(Value::Array(jobs.iter().map(job_json).collect())).into_response())
        }
        Err(e) => internal(e),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!("epcis: {e}");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "ImplementationException",
        "internal",
        "the read model could not be read".into(),
    )
}

// ------------------------------------------------------------------------------ query

/// An event as served: the anchored JSON, with the `eventID` (the hash ID when the capturer
/// gave none) and the `recordTime` (the block's time) the repository assigned.
pub fn served_event(m: &trace_event::Model) -> Option<Value> {
    let mut ev: Value = serde_json::from_str(&m.json).ok()?;
    let obj = ev.as_object_mut()?;
    if !obj.contains_key("eventID")
        && let Some(id) = &m.event_id
    {
        obj.insert("eventID".into(), Value::String(id.clone()));
    }
    if !obj.contains_key("recordTime") {
        obj.insert(
            "recordTime".into(),
            Value::String(rfc3339(m.record_time_ms)),
        );
    }
    Some(ev)
}

/// The `@context` of a result document: the standard context plus the captured documents'
/// own namespace declarations (so extension fields keep their meaning).
fn result_context(extra: &BTreeSet<String>) -> Value {
    let mut items = vec![Value::String(EPCIS_CONTEXT.into())];
    let mut seen = BTreeSet::new();
    for c in extra {
        let Ok(v) = serde_json::from_str::<Value>(c) else {
            continue;
        };
        let list = match v {
            Value::Array(a) => a,
            other => vec![other],
        };
        for item in list {
            if item.as_str().is_some_and(|s| s.contains("epcis-context")) {
                continue;
            }
            if seen.insert(item.to_string()) {
                items.push(item);
            }
        }
    }
    Value::Array(items)
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(form_urlencoded_pairs).unwrap_or_default()
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
fn form_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

/// Exact identifiers a query names, for narrowing by the identifier index.
fn exact_keys(q: &EventQuery) -> Option<Vec<String>> {
    let lists = [
        &q.match_epc,
        &q.match_parent_id,
        &q.match_input_epc,
        &q.match_output_epc,
        &q.match_any_epc,
        &q.match_epc_class,
        &q.match_input_epc_class,
        &q.match_output_epc_class,
        &q.match_any_epc_class,
    ];
    // Only one MATCH_ parameter is used for narrowing; the full query is checked afterwards.
    let list = lists.into_iter().find(|l| !l.is_empty())?;
    let mut keys = Vec::new();
    for p in list {
        match p {
            EpcPattern::Exact(k) => keys.push(k.clone()),
            _ => return None,
        }
    }
    Some(keys)
}

/// The paging position: the sort value of the last event served and its sequence number.
fn parse_token(t: &str) -> Option<(i64, i64)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn make_token(sort: i64, seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{sort}:{seq}"))
}

/// The events matching a query, one page of them, and the token of the next page.
pub async fn run_query(
    app: &TraceShared,
    q: &EventQuery,
) -> Result<(Vec<trace_event::Model>, Option<String>), Response> {
    let per_page = q
        .per_page
        .unwrap_or(DEFAULT_PER_PAGE)
        .clamp(1, MAX_PER_PAGE) as usize;
    let limit = q.event_count_limit.map(|l| l as usize);
    let desc = q.order_by.is_some() && q.order_direction == OrderDirection::Desc;
    let sort_col = match q.order_by {
        Some(OrderBy::EventTime) => trace_event::Column::EventTimeMs,
        Some(OrderBy::RecordTime) => trace_event::Column::RecordTimeMs,
        None => trace_event::Column::Seq,
    };
    let sort_of = |m: &trace_event::Model| match q.order_by {
        Some(OrderBy::EventTime) => m.event_time_ms,
        Some(OrderBy::RecordTime) => m.record_time_ms,
        None => m.seq,
    };
    let mut base = Condition::all().add(trace_event::Column::Superseded.eq(false));
    if !q.event_types.is_empty() {
        base = base.add(trace_event::Column::EventType.is_in(q.event_types.clone()));
    }
    if let Some(ge) = q.event_time.ge {
        base = base.add(trace_event::Column::EventTimeMs.gte(ge.timestamp_millis()));
    }
    if let Some(lt) = q.event_time.lt {
        base = base.add(trace_event::Column::EventTimeMs.lte(lt.timestamp_millis()));
    }
    if !q.event_ids.is_empty() {
        base = base.add(trace_event::Column::EventId.is_in(q.event_ids.clone()));
    }
    if !q.biz_steps.is_empty() {
        base = base.add(trace_event::Column::BizStep.is_in(q.biz_steps.clone()));
    }
    if !q.dispositions.is_empty() {
        base = base.add(trace_event::Column::Disposition.is_in(q.dispositions.clone()));
    }
    if !q.biz_locations.is_empty() {
        base = base.add(trace_event::Column::BizLocation.is_in(q.biz_locations.clone()));
    }
    if !q.read_points.is_empty() {
        base = base.add(trace_event::Column::ReadPoint.is_in(q.read_points.clone()));
    }
    if let Some(keys) = exact_keys(q) {
        let seqs: Vec<i64> = match trace_event_epc::Entity::find()
            .filter(trace_event_epc::Column::Epc.is_in(keys))
            .select_only()
            .column(trace_event_epc::Column::EventSeq)
            .into_tuple::<i64>()
            .all(&app.db)
            .await
        {
            Ok(s) => s,
            Err(e) => return Err(internal(e)),
        };
        if seqs.is_empty() {
            return Ok((Vec::new(), None));
        }
        let seqs: Vec<i64> = seqs
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        base = base.add(trace_event::Column::Seq.is_in(seqs));
    }
    let mut after = match &q.next_page_token {
        Some(t) => match parse_token(t) {
            Some(p) => Some(p),
            None => {
                return Err(problem(
                    StatusCode::BAD_REQUEST,
                    "QueryParameterException",
                    "epcis_query_parameter_invalid",
                    "nextPageToken is not a token this server issued".into(),
                ));
            }
        },
        None => None,
    };
    let mut out = Vec::new();
    let mut matched_total = 0usize;
    let batch = (per_page * 2).max(200) as u64;
    loop {
        let mut cond = base.clone();
        if let Some((s, seq)) = after {
            let next = if desc {
                Condition::any().add(sort_col.lt(s)).add(
                    Condition::all()
                        .add(sort_col.eq(s))
                        .add(trace_event::Column::Seq.lt(seq)),
                )
            } else {
                Condition::any().add(sort_col.gt(s)).add(
                    Condition::all()
                        .add(sort_col.eq(s))
                        .add(trace_event::Column::Seq.gt(seq)),
                )
            };
            cond = cond.add(next);
        }
        let mut find = trace_event::Entity::find().filter(cond);
        find = if desc {
            find.order_by_desc(sort_col)
                .order_by_desc(trace_event::Column::Seq)
        } else {
            find.order_by_asc(sort_col)
                .order_by_asc(trace_event::Column::Seq)
        };
        let rows = match find.limit(batch).all(&app.db).await {
            Ok(r) => r,
            Err(e) => return Err(internal(e)),
        };
        let exhausted = (rows.len() as u64) < batch;
        for m in rows {
            after = Some((sort_of(&m), m.seq));
            let Some(ev) = served_event(&m) else { continue };
            if !q.matches(&ev) {
                continue;
            }
            matched_total += 1;
            if let Some(max) = q.max_event_count
                && matched_total as u64 > max
            {
                return Err(problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "QueryTooLargeException",
                    "epcis_query_too_large",
                    format!("more than maxEventCount={max} events match"),
                ));
            }
            if limit.is_some_and(|l| out.len() >= l) {
                return Ok((out, None));
            }
            if out.len() == per_page {
                // One more match exists: there is a next page, starting after the last served.
                let last = out
                    .last()
                    .map(|m: &trace_event::Model| make_token(sort_of(m), m.seq));
                if q.max_event_count.is_none() {
                    return Ok((out, last));
                }
                continue;
            }
            out.push(m);
        }
        if exhausted {
            return Ok((out, None));
        }
    }
}

fn query_error(e: crate::epcis::query::QueryError) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        e.epcis_exception(),
        e.code(),
        e.to_string(),
    )
}

async fn events(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(r) = caller(&v, &headers).await {
        return r;
    }
    let pairs = query_pairs(raw.as_deref());
    let q = match EventQuery::from_pairs(&pairs) {
        Ok(q) => q,
        Err(e) => return query_error(e),
    };
    let (rows, next) = match run_query(&app, &q).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let extra: BTreeSet<String> = rows.iter().filter_map(|m| m.context.clone()).collect();
    let list: Vec<Value> = rows.iter().filter_map(served_event).collect();
    let doc = json!({
        "@context": result_context(&extra),
        "type": "EPCISQueryDocument",
        "schemaVersion": "2.0",
        "creationDate": rfc3339(now_ms() as i64),
        "epcisBody": {
            "queryResults": {
                "queryName": "SimpleEventQuery",
                "resultsBody": {"eventList": list},
            }
        }
    });
    let mut r = Json(doc).into_response();
    if let Some(token) = next {
        let mut keep: Vec<(String, String)> = pairs
            .into_iter()
            .filter(|(k, _)| k != "nextPageToken")
            .collect();
        keep.push(("nextPageToken".into(), token));
        let qs: Vec<String> = keep
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    frontend::components::urlencode(k),
                    frontend::components::urlencode(v)
                )
            })
            .collect();
        if let Ok(h) =
            HeaderValue::from_str(&format!("</epcis/events?{}>; rel=\"next\"", qs.join("&")))
        {
            r.headers_mut().insert(header::LINK, h);
        }
    }
    epcis_headers(r)
}

async fn event_by_id(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = caller(&v, &headers).await {
        return r;
    }
    // A corrected event has two rows with one eventID: the correction is the newer. A CBV
    // hash ID also finds an event stored under its own eventID (the same event captured again
    // under another ID is not stored twice).
    let by_hash = ids::hash_hex(&id).ok();
    let mut cond = Condition::any().add(trace_event::Column::EventId.eq(id.clone()));
    if let Some(hex) = &by_hash {
        cond = cond
            .add(trace_event::Column::Hash.eq(hex.clone()))
            .add(trace_event::Column::Hash.eq(format!("{hex}:declaration")));
    }
    let found = trace_event::Entity::find()
        .filter(cond)
        .order_by_desc(trace_event::Column::Seq)
        .one(&app.db)
        .await;
    match found {
        Ok(Some(m)) => {
            let Some(mut ev) = served_event(&m) else {
                return internal("stored event is not JSON");
            };
            let extra: BTreeSet<String> = m.context.iter().cloned().collect();
            if let Some(obj) = ev.as_object_mut() {
                obj.insert("@context".into(), result_context(&extra));
            }
            epcis_headers(Json(ev).into_response())
        }
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "NoSuchResourceException",
            "not_found",
            format!("no event {id}"),
        ),
        Err(e) => internal(e),
    }
}

/// Counts of the read model, for the overview page and metrics.
pub async fn counts(app: &TraceShared) -> BTreeMap<&'static str, u64> {
    let mut m = BTreeMap::new();
    m.insert(
        "events",
        trace_event::Entity::find()
            .count(&app.db)
            .await
            .unwrap_or(0),
    );
    m
}

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/epcis/capture",
            post(capture)
                .get(capture_jobs)
                .layer(DefaultBodyLimit::max(MAX_CAPTURE_BYTES)),
        )
        .route("/epcis/capture/{id}", get(capture_job))
        .route("/epcis/events", get(events))
        // Event IDs are URIs: a client may leave their slashes unescaped.
        .route("/epcis/events/{*id}", get(event_by_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_chunked_within_the_budget() {
        let big = "x".repeat(300 * 1024);
        let chunks = chunk_events(
            vec![big.clone(), big.clone(), big.clone(), "y".into()],
            900 * 1024,
        );
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].len(), 2);
        let many = chunk_events(vec!["e".to_string(); TX_EVENTS * 2 + 1], 900 * 1024);
        // Quotes are escaped inside the arguments: a chunk's encoded size stays in the budget.
        let quoted = vec![r#"{"a":"b"}"#.to_string(); 1000];
        for chunk in chunk_events(quoted, 1024) {
            let args = serde_json::to_string(&chunk).unwrap();
            assert!(args.len() <= 1024, "{}", args.len());
        }
        assert_eq!(
            many.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![TX_EVENTS, TX_EVENTS, 1]
        );
    }

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        assert_eq!(parse_token(&make_token(-5, 42)), Some((-5, 42)));
        assert_eq!(parse_token("not a token"), None);
    }

    #[test]
    fn form_pairs_decode_plus_and_percent() {
        assert_eq!(
            form_urlencoded_pairs("GE_eventTime=2020-01-01T00:00:00%2B01:00&EQ_bizStep=a+b"),
            vec![
                (
                    "GE_eventTime".to_string(),
                    "2020-01-01T00:00:00+01:00".to_string()
                ),
                ("EQ_bizStep".to_string(), "a b".to_string())
            ]
        );
    }
}
