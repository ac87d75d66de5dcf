//! The node's JSON API under `/api/v1` (axum), with its OpenAPI document (utoipa), a
//! Server-Sent Events stream of committed blocks and contract events, `/healthz` and `/metrics`.
//!
//! Every error is `{"error": {"code": "<stable code>", "message": "<human text>"}}`; a rejected
//! request changes nothing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_stream::wrappers::BroadcastStream;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::crypto::{Digest, PublicKey};
use crate::node::{AdmitError, Node, NodeError, Submitted, TxOutcome, decode_block_row};
use crate::storage::entities::{block as block_row, tx as tx_row};
use crate::types::{BlockHeader, Receipt, SignedTx};

// ------------------------------------------------------------------ errors

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_s: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `bad_signature`, `stale_nonce`, `mempool_full`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut resp = (self.status, body).into_response();
        if let Some(s) = self.retry_after_s
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        tracing::error!("api: {e}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the node log",
        )
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        NodeError::from(e).into()
    }
}

impl From<AdmitError> for ApiError {
    fn from(e: AdmitError) -> Self {
        let status = match e.code {
            "oversized" => StatusCode::PAYLOAD_TOO_LARGE,
            "not_permitted" => StatusCode::FORBIDDEN,
            "duplicate" | "nonce_in_use" | "stale_nonce" => StatusCode::CONFLICT,
            "mempool_full" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "internal" => StatusCode::INTERNAL_SERVER_ERROR,
            "dropped" => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            code: e.code,
            message: e.message,
            retry_after_s: e.retry_after_s,
        }
    }
}

/// `Query` whose rejections use the API's error format.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|r| ApiError::bad("malformed", r.body_text()))
    }
}

/// `Path` whose rejections use the API's error format.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Self(v))
            .map_err(|r| ApiError::bad("malformed", r.body_text()))
    }
}

/// `Json` whose rejections use the API's error format.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::BytesRejection(r))
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "oversized",
                    "request body is too large",
                ))
            }
            Err(r) => Err(ApiError::bad("malformed", r.body_text())),
        }
    }
}

// ------------------------------------------------------------------ types

#[derive(Deserialize, ToSchema)]
pub struct SubmitRequest {
    /// Hex of the canonical SignedTx bytes (docs/spec/encoding.md).
    pub tx: String,
    /// `admission` (default): answer once the transaction is durably in the pool.
    /// `commit`: answer once it is in a committed block (or after `timeout_ms`).
    #[serde(default)]
    pub wait: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Deserialize, ToSchema)]
pub struct BatchRequest {
    /// Hex SignedTx bytes; each is admitted independently.
    pub txs: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SubmitResponse {
    pub tx_id: String,
    /// `pending` or `committed`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub receipt: Option<Value>,
}

fn receipt_json(r: &Receipt) -> Value {
    json!({
        "status": r.status,
        "code": r.code,
        "message": r.message,
        "events": r.events,
    })
}

fn outcome_json(o: &TxOutcome) -> SubmitResponse {
    SubmitResponse {
        tx_id: o.tx_id.to_hex(),
        status: "committed".into(),
        height: Some(o.height),
        index: Some(o.index),
        receipt: Some(receipt_json(&o.receipt)),
    }
}

fn args_json(args: &[u8]) -> Value {
    serde_json::from_slice::<Value>(args).unwrap_or_else(|_| json!({ "hex": hex::encode(args) }))
}

fn tx_json(tx: &SignedTx) -> Value {
    json!({
        "id": tx.id().to_hex(),
        "chain_id": tx.body.chain_id,
        "sender": tx.body.sender.to_text(),
        "sender_did": tx.body.sender.did(),
        "nonce": tx.body.nonce,
        "expiry_ms": tx.body.expiry_ms,
        "contract": tx.body.contract,
        "method": tx.body.method,
        "args": args_json(&tx.body.args),
        "signature": tx.signature.to_text(),
        "size": tx.bytes().len(),
    })
}

fn header_json(h: &BlockHeader) -> Value {
    json!({
        "hash": h.hash().to_hex(),
        "chain_id": h.chain_id,
        "height": h.height,
        "time_ms": h.time_ms,
        "tx_count": h.tx_count,
        "prev_hash": h.prev_hash.to_hex(),
        "tx_root": h.tx_root.to_hex(),
        "receipt_root": h.receipt_root.to_hex(),
        "state_root": h.state_root.to_hex(),
        "validator_set_hash": h.validator_set_hash.to_hex(),
        "proposer": h.proposer.to_text(),
    })
}

type ApiResult<T> = Result<T, ApiError>;

fn parse_digest(node: &Node, s: &str) -> ApiResult<Digest> {
    Digest::from_hex(node.hash_alg(), s).map_err(|e| ApiError::bad("malformed", e.to_string()))
}

// ------------------------------------------------------------------ handlers

#[utoipa::path(post, path = "/api/v1/txs", request_body = SubmitRequest,
    responses((status = 200, description = "committed", body = SubmitResponse),
              (status = 202, description = "admitted, pending", body = SubmitResponse),
              (status = 400, description = "malformed, wrong_chain, expired, bad_signature, future_nonce, unknown_contract, unknown_method", body = ErrorBody),
              (status = 403, description = "not_permitted", body = ErrorBody),
              (status = 409, description = "duplicate, stale_nonce, nonce_in_use", body = ErrorBody),
              (status = 413, description = "oversized", body = ErrorBody),
              (status = 503, description = "mempool_full (see Retry-After)", body = ErrorBody)))]
async fn submit_tx(
    State(node): State<Arc<Node>>,
    ApiJson(req): ApiJson<SubmitRequest>,
) -> ApiResult<Response> {
    if req.tx.len() > node.cfg.max_tx_bytes * 2 {
        node.metrics.reject("oversized");
        return Err(AdmitError::new(
            "oversized",
            format!("transaction exceeds {} bytes", node.cfg.max_tx_bytes),
        )
        .into());
    }
    let raw = hex::decode(req.tx.trim()).map_err(|_| {
        node.metrics.reject("malformed");
        ApiError::bad("malformed", "`tx` must be hex")
    })?;
    let wait = match req.wait.as_deref() {
        None | Some("admission") => None,
        Some("commit") => Some(Duration::from_millis(
            req.timeout_ms.unwrap_or(30_000).min(120_000),
        )),
        Some(other) => {
            node.metrics.reject("malformed");
            return Err(ApiError::bad(
                "malformed",
                format!("unknown wait mode `{other}`"),
            ));
        }
    };
    match node.submit(&raw, wait).await? {
        Submitted::Committed(o) => Ok((StatusCode::OK, Json(outcome_json(&o))).into_response()),
        Submitted::Pending(id) => Ok((
            StatusCode::ACCEPTED,
            Json(SubmitResponse {
                tx_id: id.to_hex(),
                status: "pending".into(),
                height: None,
                index: None,
                receipt: None,
            }),
        )
            .into_response()),
    }
}

#[utoipa::path(post, path = "/api/v1/txs/batch", request_body = BatchRequest,
    responses((status = 200, description = "one result per transaction, in order", body = Object)))]
async fn submit_batch(
    State(node): State<Arc<Node>>,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<BatchRequest>,
) -> ApiResult<Json<Value>> {
    // Batches relayed by a peer node are admitted but not relayed again.
    let relayed = headers.contains_key(crate::relay::RELAYED_HEADER);
    if req.txs.len() > 10_000 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "oversized",
            "at most 10000 transactions per batch",
        ));
    }
    let futs = req.txs.iter().map(|h| {
        let node = node.clone();
        async move {
            let raw = match hex::decode(h.trim()) {
                Ok(r) => r,
                Err(_) => return json!({"error": {"code": "malformed", "message": "not hex"}}),
            };
            let submitted = if relayed {
                node.submit_relayed(&raw).await
            } else {
                node.submit(&raw, None).await
            };
            match submitted {
                Ok(Submitted::Pending(id)) => json!({"tx_id": id.to_hex(), "status": "pending"}),
                Ok(Submitted::Committed(o)) => {
                    json!({"tx_id": o.tx_id.to_hex(), "status": "committed"})
                }
                Err(e) => json!({"error": {"code": e.code, "message": e.message}}),
            }
        }
    });
    let results = futures::future::join_all(futs).await;
    Ok(Json(json!({ "results": results })))
}

#[utoipa::path(get, path = "/api/v1/txs/{id}", params(("id" = String, Path, description = "transaction id (hex)")),
    responses((status = 200, description = "transaction, status and receipt", body = Object), (status = 404, body = ErrorBody)))]
async fn get_tx(
    State(node): State<Arc<Node>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_digest(&node, &id)?;
    // Pool first, then store: a commit writes the store before it empties the pool, so a
    // transaction committing between the two lookups is still found.
    if node.mempool.contains(&id) {
        return Ok(Json(json!({"id": id.to_hex(), "status": "pending"})));
    }
    if let Some(row) = node.store.tx(&id.bytes).await? {
        return Ok(Json(committed_tx_json(&node, &row)?));
    }
    // A decided block leaves the pool before its rows are stored: if one is in flight, look
    // again once it is persisted.
    let head = node.head().height;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.tip().height < head && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(row) = node.store.tx(&id.bytes).await? {
        return Ok(Json(committed_tx_json(&node, &row)?));
    }
    Err(ApiError::not_found("no such transaction"))
}

fn committed_tx_json(node: &Node, row: &tx_row::Model) -> ApiResult<Value> {
    let tx = SignedTx::decode(&row.raw, node.hash_alg())
        .map_err(|e| NodeError::Internal(e.to_string()))?;
    let rc = Receipt::decode(&row.receipt).map_err(|e| NodeError::Internal(e.to_string()))?;
    Ok(json!({
        "id": tx.id().to_hex(),
        "status": "committed",
        "height": row.height,
        "index": row.idx,
        "tx": tx_json(&tx),
        "receipt": receipt_json(&rc),
    }))
}

#[utoipa::path(get, path = "/api/v1/txs/{id}/proof", params(("id" = String, Path)),
    responses((status = 200, description = "self-contained proof bundle (trellis-proof/1)", body = Object), (status = 404, body = ErrorBody)))]
async fn get_tx_proof(
    State(node): State<Arc<Node>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_digest(&node, &id)?;
    let bundle = node
        .tx_proof(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no committed transaction with this id"))?;
    Ok(Json(
        serde_json::to_value(bundle).map_err(|e| NodeError::Internal(e.to_string()))?,
    ))
}

async fn block_json(node: &Node, row: &block_row::Model, with_txs: bool) -> ApiResult<Value> {
    let (header, cert, set) = decode_block_row(row)?;
    let mut v = header_json(&header);
    v["commit"] = json!({
        "round": cert.round,
        "signatures": cert.signatures.iter().map(|s| json!({
            "validator_index": s.validator_index,
            "validator": set.validators().get(s.validator_index as usize).map(|v| v.public_key.to_text()),
            "signature": s.signature.to_text(),
        })).collect::<Vec<_>>(),
    });
    v["tx_count"] = json!(row.tx_count);
    if with_txs {
        let txs = node.store.txs_in_block(header.height).await?;
        v["txs"] = Value::Array(
            txs.iter()
                .map(|t| {
                    json!({"id": hex::encode(&t.id), "index": t.idx, "sender": t.sender, "contract": t.contract,
                           "method": t.method, "ok": t.ok, "code": t.code})
                })
                .collect(),
        );
    }
    Ok(v)
}

#[utoipa::path(get, path = "/api/v1/blocks/latest", responses((status = 200, body = Object)))]
async fn latest_block(State(node): State<Arc<Node>>) -> ApiResult<Json<Value>> {
    let row = node
        .store
        .block_by_height(node.tip().height)
        .await?
        .ok_or_else(|| ApiError::not_found("no block"))?;
    Ok(Json(block_json(&node, &row, true).await?))
}

#[utoipa::path(get, path = "/api/v1/blocks/{id}", params(("id" = String, Path, description = "height (decimal) or block hash (hex)")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
async fn get_block(
    State(node): State<Arc<Node>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let row = if id.len() == 64 {
        let d = parse_digest(&node, &id)?;
        node.store.block_by_hash(&d.bytes).await?
    } else {
        let h: u64 = id
            .parse()
            .map_err(|_| ApiError::bad("malformed", "expected a height or a 64-hex block hash"))?;
        node.store.block_by_height(h).await?
    };
    let row = row.ok_or_else(|| ApiError::not_found("no such block"))?;
    Ok(Json(block_json(&node, &row, true).await?))
}

#[derive(Deserialize, IntoParams)]
pub struct BlockListQuery {
    /// Only blocks below this height.
    pub before: Option<u64>,
    /// 1-100, default 20.
    pub limit: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/blocks", params(BlockListQuery), responses((status = 200, body = Object)))]
async fn list_blocks(
    State(node): State<Arc<Node>>,
    ApiQuery(q): ApiQuery<BlockListQuery>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let rows = node.store.blocks_desc(q.before, limit).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(block_json(&node, r, false).await?);
    }
    Ok(Json(json!({ "blocks": out })))
}

#[utoipa::path(get, path = "/api/v1/accounts/{key}", params(("key" = String, Path, description = "`ed25519:<hex>`, `sm2:<hex>` or did:key")),
    responses((status = 200, description = "nonce, key status, member and roles", body = Object), (status = 400, body = ErrorBody)))]
async fn get_account(
    State(node): State<Arc<Node>>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let pk: PublicKey = key
        .parse()
        .map_err(|e: crate::crypto::CryptoError| ApiError::bad("malformed", e.to_string()))?;
    let acc = node.account(&pk).await?;
    let recent = node.store.txs_by_sender(&pk.to_text(), 20).await?;
    let mut v = serde_json::to_value(acc).map_err(|e| NodeError::Internal(e.to_string()))?;
    v["recent_txs"] = Value::Array(
        recent
            .iter()
            .map(|t| json!({"id": hex::encode(&t.id), "height": t.height, "nonce": t.nonce, "contract": t.contract, "method": t.method, "ok": t.ok}))
            .collect(),
    );
    Ok(Json(v))
}

#[derive(Deserialize, IntoParams)]
pub struct StateQuery {
    /// Block height (default: latest).
    pub height: Option<u64>,
    /// How `key` in the path is written: `utf8` (default) or `hex`.
    pub key_encoding: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct StateListQuery {
    /// Only keys starting with this (UTF-8).
    pub prefix: Option<String>,
    /// Continue after this key (the last key of the previous page).
    pub after: Option<String>,
    /// At most this many entries (default 100, at most 1,000).
    pub limit: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/state/{contract}", params(("contract" = String, Path), StateListQuery),
    responses((status = 200, description = "`{\"entries\": [{\"key\", \"value\"}]}` of the latest state, in key order", body = Object), (status = 404, body = ErrorBody)))]
async fn list_state(
    State(node): State<Arc<Node>>,
    ApiPath(contract): ApiPath<String>,
    ApiQuery(q): ApiQuery<StateListQuery>,
) -> ApiResult<Json<Value>> {
    if !node.registry.names().contains(&contract.as_str()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_contract",
            format!("no contract `{contract}`"),
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1_000);
    let rows = node
        .state_list(
            &contract,
            q.prefix.as_deref().unwrap_or("").as_bytes(),
            q.after.as_deref().map(str::as_bytes),
            limit,
        )
        .await?;
    let entries: Vec<Value> = rows
        .into_iter()
        .map(|(k, v)| {
            json!({
                "key": String::from_utf8_lossy(&k),
                "value": serde_json::from_slice::<Value>(&v).unwrap_or_else(|_| Value::String(hex::encode(&v))),
            })
        })
        .collect();
    Ok(Json(json!({ "entries": entries })))
}

#[utoipa::path(get, path = "/api/v1/state/{contract}/{key}", params(("contract" = String, Path), ("key" = String, Path), StateQuery),
    responses((status = 200, description = "value (or null) and its proof bundle", body = Object), (status = 404, body = ErrorBody)))]
async fn get_state(
    State(node): State<Arc<Node>>,
    ApiPath((contract, key)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<StateQuery>,
) -> ApiResult<Json<Value>> {
    if !node.registry.names().contains(&contract.as_str()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_contract",
            format!("no contract `{contract}`"),
        ));
    }
    let raw_key = match q.key_encoding.as_deref() {
        None | Some("utf8") => key.into_bytes(),
        Some("hex") => {
            hex::decode(&key).map_err(|_| ApiError::bad("malformed", "key is not hex"))?
        }
        Some(o) => {
            return Err(ApiError::bad(
                "malformed",
                format!("unknown key_encoding `{o}`"),
            ));
        }
    };
    if let Some(h) = q.height
        && h > node.tip().height
    {
        return Err(ApiError::not_found(format!(
            "height {h} is not committed yet"
        )));
    }
    if q.height == Some(0) {
        // The genesis block carries no commit signatures: it is trusted through the genesis
        // file itself, so a bundle for it could never verify.
        return Err(ApiError::bad(
            "malformed",
            "genesis state is proven by the genesis file; ask for a height of 1 or more",
        ));
    }
    let bundle = node
        .state_proof(&contract, &raw_key, q.height)
        .await?
        .ok_or_else(|| ApiError::not_found("no such block"))?;
    let value = match &bundle.claim {
        crate::proof::Claim::State { value, .. } => value.clone(),
        _ => None,
    };
    let decoded = value
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    Ok(Json(json!({
        "contract": contract,
        "key": String::from_utf8_lossy(&raw_key),
        "exists": value.is_some(),
        "value": decoded,
        "value_hex": value,
        "proof": bundle,
    })))
}

#[derive(Deserialize, IntoParams)]
pub struct EventQuery {
    pub contract: Option<String>,
    /// Event type, e.g. `anchored` (also accepted as `type`).
    #[serde(alias = "type")]
    pub kind: Option<String>,
    pub from_height: Option<u64>,
    pub to_height: Option<u64>,
    /// 1-1000, default 100.
    pub limit: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/events", params(EventQuery), responses((status = 200, body = Object)))]
async fn list_events(
    State(node): State<Arc<Node>>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<Json<Value>> {
    if let (Some(f), Some(t)) = (q.from_height, q.to_height)
        && f > t
    {
        return Err(ApiError::bad("malformed", "from_height is above to_height"));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = node
        .store
        .events(
            q.contract.as_deref(),
            q.kind.as_deref(),
            q.from_height,
            q.to_height,
            limit,
        )
        .await?;
    let events: Vec<Value> = rows
        .iter()
        .map(|e| {
            json!({"height": e.height, "tx_index": e.tx_idx, "event_index": e.ev_idx, "tx_id": hex::encode(&e.tx_id),
                   "contract": e.contract, "kind": e.kind,
                   "data": serde_json::from_str::<Value>(&e.data).unwrap_or(Value::String(e.data.clone()))})
        })
        .collect();
    Ok(Json(json!({ "events": events })))
}

#[utoipa::path(get, path = "/api/v1/chain", responses((status = 200, description = "chain id, suite, genesis hash, tip, validators", body = Object)))]
async fn chain_info(State(node): State<Arc<Node>>) -> ApiResult<Json<Value>> {
    let tip = node.tip();
    let set = node.next_validator_set().await?;
    Ok(Json(json!({
        "chain_id": node.info.chain_id,
        "suite": node.info.suite,
        "genesis_hash": node.info.genesis_hash.to_hex(),
        "height": tip.height,
        "latest_hash": tip.hash.to_hex(),
        "latest_time_ms": tip.time_ms,
        "validator_set": hex::encode(set.encode()),
        "validators": set.validators(),
        "contracts": node.registry.names(),
        "mempool": node.mempool.len(),
    })))
}

#[derive(Deserialize, IntoParams)]
pub struct StreamQuery {
    /// Only forward contract events of this contract.
    pub contract: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/stream", params(StreamQuery),
    responses((status = 200, description = "text/event-stream: `block` events for each commit, `contract_event` for each contract event", content_type = "text/event-stream", body = String)))]
async fn stream(
    State(node): State<Arc<Node>>,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = node.subscribe();
    let s = BroadcastStream::new(rx).flat_map(move |item| {
        let mut out: Vec<Result<SseEvent, Infallible>> = Vec::new();
        match item {
            Ok(b) => {
                let block = json!({"height": b.height, "hash": b.hash.to_hex(), "time_ms": b.time_ms,
                                   "tx_count": b.tx_count, "proposer": b.proposer});
                out.push(Ok(SseEvent::default().event("block").id(b.height.to_string()).data(block.to_string())));
                for (tx, e) in &b.events {
                    if q.contract.as_deref().is_some_and(|c| c != e.contract) {
                        continue;
                    }
                    let data = json!({"height": b.height, "tx_id": tx.to_hex(), "contract": e.contract, "kind": e.kind,
                                      "data": serde_json::from_slice::<Value>(&e.data).unwrap_or(Value::Null)});
                    out.push(Ok(SseEvent::default().event("contract_event").data(data.to_string())));
                }
            }
            Err(_) => {
                // The subscriber fell behind; tell it to resynchronise through the REST API.
                out.push(Ok(SseEvent::default().event("lagged").data("{}")));
            }
        }
        futures::stream::iter(out)
    });
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn healthz(State(node): State<Arc<Node>>) -> Json<Value> {
    let tip = node.tip();
    Json(json!({"status": "ok", "height": tip.height, "chain_id": node.info.chain_id}))
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.metrics.render(),
    )
        .into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Trellis node API",
        version = "1",
        description = "Submit signed transactions, read blocks, transactions, state and events with proofs."
    ),
    paths(
        submit_tx,
        submit_batch,
        get_tx,
        get_tx_proof,
        latest_block,
        get_block,
        list_blocks,
        get_account,
        get_state,
        list_state,
        list_events,
        chain_info,
        stream
    ),
    components(schemas(SubmitRequest, BatchRequest, SubmitResponse, ErrorBody, ErrorDetail))
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// The node API router (mount at the root: it serves `/api/v1/...`, `/healthz`, `/metrics`).
pub fn router(node: Arc<Node>) -> Router {
    let body_limit = (node.cfg.max_tx_bytes * 2 + 4096).max(8 * 1024 * 1024);
    Router::new()
        .route("/api/v1/txs", post(submit_tx))
        .route("/api/v1/txs/batch", post(submit_batch))
        .route("/api/v1/txs/{id}", get(get_tx))
        .route("/api/v1/txs/{id}/proof", get(get_tx_proof))
        .route("/api/v1/blocks", get(list_blocks))
        .route("/api/v1/blocks/latest", get(latest_block))
        .route("/api/v1/blocks/{id}", get(get_block))
        .route("/api/v1/accounts/{key}", get(get_account))
        .route("/api/v1/state/{contract}", get(list_state))
        .route("/api/v1/state/{contract}/{key}", get(get_state))
        .route("/api/v1/events", get(list_events))
        .route("/api/v1/chain", get(chain_info))
        .route("/api/v1/stream", get(stream))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        // Unknown API paths get a JSON error; every other path is left to whatever router this
        // one is merged with (the web UI).
        .route("/api/{*rest}", axum::routing::any(fallback))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(node)
}
