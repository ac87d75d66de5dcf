//! Follows the committed chain and keeps the traceability read model (`store`) in step: EPCIS
//! events from `trace.capture` transactions, sensor readings from `trace.sensor_report`, and
//! alerts from the contract's `alert` events. Only successful transactions count, and only what
//! the chain committed is indexed, so the read model can always be rebuilt from the chain.
//! The last indexed height is written in the same database transaction as the rows, so a crash
//! neither loses nor repeats a block.

use std::sync::Arc;
use std::time::Duration;

use chain_core::node::Node;
use chain_core::storage::tx_seq;
use chain_core::types::{Receipt, SignedTx};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    TransactionTrait,
};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::contract::NAME;
use crate::domain::lot_key;
use crate::epcis::query::index_keys;
use crate::ids;
use crate::store::{
    self, trace_alert, trace_cert, trace_event, trace_event_epc, trace_handover, trace_reading,
};

/// Events of one transaction get consecutive sequence numbers under its chain position.
pub const EVENTS_PER_TX_BITS: u32 = 14;

/// The read model's key of the `i`th event of the transaction at `height`/`idx`: chain order.
pub fn event_seq(height: u64, idx: u32, i: usize) -> i64 {
    (tx_seq(height, idx) << EVENTS_PER_TX_BITS) | (i as i64 & ((1 << EVENTS_PER_TX_BITS) - 1))
}

#[derive(Deserialize)]
struct CaptureArgs {
    capture_id: String,
    #[serde(default)]
    context: Value,
    #[serde(default)]
    ignore_fields: Vec<String>,
    events: Vec<String>,
}

#[derive(Deserialize)]
struct SensorArgs {
    gtin: String,
    lot: String,
    device: String,
    readings: Vec<SensorReading>,
}

#[derive(Deserialize)]
struct SensorReading {
    time_ms: u64,
    #[serde(default)]
    temperature_c: Option<f64>,
    #[serde(default)]
    humidity_pct: Option<f64>,
}

fn hundredths(v: Option<f64>) -> Option<i64> {
    v.filter(|v| v.is_finite())
        .map(|v| (v * 100.0).round() as i64)
}

/// Whether a document context says more than the standard EPCIS context URL.
fn extra_context(context: &Value) -> Option<String> {
    match context {
        Value::Null => None,
        Value::String(s) if s.contains("epcis-context") => None,
        Value::Array(items)
            if items
                .iter()
                .all(|i| i.as_str().is_some_and(|s| s.contains("epcis-context"))) =>
        {
            None
        }
        other => Some(other.to_string()),
    }
}

/// The indexer's handle: the height it has applied, for callers that must wait for it.
#[derive(Clone)]
pub struct Indexed(watch::Receiver<u64>);

impl Indexed {
    pub fn height(&self) -> u64 {
        *self.0.borrow()
    }

    /// Waits until blocks up to `height` are in the read model (or `timeout` passes).
    pub async fn wait_for(&self, height: u64, timeout: Duration) -> bool {
        let mut rx = self.0.clone();
        tokio::time::timeout(timeout, rx.wait_for(|h| *h >= height))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Starts the indexer task; it runs until `stop` turns true.
pub async fn start(
    node: Arc<Node>,
    db: DatabaseConnection,
    mut stop: watch::Receiver<bool>,
) -> Result<Indexed, DbErr> {
    store::migrate(&db).await?;
    let start = store::indexed_height(&db).await?;
    let (tx, rx) = watch::channel(start);
    tokio::spawn(async move {
        let mut blocks = node.subscribe();
        let mut indexed = start;
        loop {
            let tip = node.tip().height;
            while indexed < tip {
                let h = indexed + 1;
                match index_block(&node, &db, h).await {
                    Ok(()) => {
                        indexed = h;
                        let _ = tx.send(h);
                    }
                    Err(e) => {
                        tracing::error!(height = h, "traceability indexer: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                }
            }
            tokio::select! {
                _ = blocks.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    });
    Ok(Indexed(rx))
}

/// Applies one committed block to the read model.
pub async fn index_block(node: &Node, db: &DatabaseConnection, height: u64) -> Result<(), String> {
    let txs = node
        .store
        .txs_in_block(height)
        .await
        .map_err(|e| e.to_string())?;
    let time_ms = match node.block_header(height).await {
        Ok(Some((h, _, _))) => h.time_ms as i64,
        Ok(None) => return Err(format!("block {height} is not stored")),
        Err(e) => return Err(e.to_string()),
    };
    let mut events = Vec::new();
    let mut epcs = Vec::new();
    let mut readings = Vec::new();
    let mut alerts = Vec::new();
    let mut certs = Vec::new();
    let mut handovers = Vec::new();
    for row in txs.iter().filter(|t| t.contract == NAME && t.ok) {
        let idx = row.idx as u32;
        let tx = SignedTx::decode(&row.raw, node.hash_alg()).map_err(|e| e.to_string())?;
        let tx_id = tx.id().to_hex();
        match row.method.as_str() {
            "capture" => {
                let Ok(a) = serde_json::from_slice::<CaptureArgs>(&tx.body.args) else {
                    continue;
                };
                let context = extra_context(&a.context);
                let skipped = skipped_events(&row.receipt);
                for (i, raw) in a.events.iter().enumerate() {
                    if skipped.contains(&i) {
                        continue;
                    }
                    let Ok(event) = serde_json::from_str::<Value>(raw) else {
                        continue;
                    };
                    let Ok(hash_id) = ids::event_hash_id(&event, &a.context, &a.ignore_fields)
                    else {
                        continue;
                    };
                    let Ok(hex) = ids::hash_hex(&hash_id) else {
                        continue;
                    };
                    let Ok(k) = index_keys(&event) else {
                        continue;
                    };
                    // A correction (error declaration) is a second row under its own key.
                    let hex = if event.get("errorDeclaration").is_some() {
                        format!("{hex}:declaration")
                    } else {
                        hex
                    };
                    let seq = event_seq(height, idx, i);
                    for e in &k.epcs {
                        epcs.push(trace_event_epc::ActiveModel {
                            epc: Set(e.key.clone()),
                            role: Set(e.role.as_str().to_string()),
                            event_seq: Set(seq),
                            ..Default::default()
                        });
                    }
                    events.push(trace_event::ActiveModel {
                        seq: Set(seq),
                        hash: Set(hex),
                        event_id: Set(Some(k.event_id.unwrap_or(hash_id))),
                        event_type: Set(k.event_type),
                        event_time_ms: Set(k.event_time_ms),
                        record_time_ms: Set(time_ms),
                        action: Set(k.action),
                        biz_step: Set(k.biz_step),
                        disposition: Set(k.disposition),
                        read_point: Set(k.read_point),
                        biz_location: Set(k.biz_location),
                        capture_id: Set(a.capture_id.clone()),
                        height: Set(height as i64),
                        tx_id: Set(tx_id.clone()),
                        json: Set(raw.clone()),
                        context: Set(context.clone()),
                        superseded: Set(false),
                    });
                }
            }
            "sensor_report" => {
                let Ok(a) = serde_json::from_slice::<SensorArgs>(&tx.body.args) else {
                    continue;
                };
                let Ok(gtin) = ids::gtin14(&a.gtin) else {
                    continue;
                };
                let key = lot_key(&gtin, &a.lot);
                for r in a.readings {
                    readings.push(trace_reading::ActiveModel {
                        lot_key: Set(key.clone()),
                        device: Set(a.device.clone()),
                        time_ms: Set(r.time_ms as i64),
                        temperature: Set(hundredths(r.temperature_c)),
                        humidity: Set(hundredths(r.humidity_pct)),
                        height: Set(height as i64),
                        ..Default::default()
                    });
                }
            }
            _ => {}
        }
        let Ok(receipt) = Receipt::decode(&row.receipt) else {
            continue;
        };
        for ev in receipt.events.iter().filter(|e| e.kind == "certificate") {
            let Ok(data) = serde_json::from_slice::<Value>(&ev.data) else {
                continue;
            };
            if let (Some(id), Some(subject)) = (data["id"].as_str(), data["subject"].as_str()) {
                certs.push(trace_cert::ActiveModel {
                    id: Set(id.to_string()),
                    subject: Set(subject.to_string()),
                    kind: Set(data["kind"].as_str().unwrap_or_default().to_string()),
                    height: Set(height as i64),
                });
            }
        }
        for ev in receipt
            .events
            .iter()
            .filter(|e| e.kind.starts_with("handover_"))
        {
            let Ok(data) = serde_json::from_slice::<Value>(&ev.data) else {
                continue;
            };
            let status = ev.kind.trim_start_matches("handover_").to_string();
            if let (Some(id), Some(from), Some(to)) = (
                data["id"].as_str(),
                data["from"].as_str(),
                data["to"].as_str(),
            ) {
                handovers.push(trace_handover::Model {
                    id: id.to_string(),
                    from_org: from.to_string(),
                    to_org: to.to_string(),
                    status,
                    offered_height: height as i64,
                    answered_height: None,
                });
            }
        }
        for ev in receipt.events.iter().filter(|e| e.kind == "alert") {
            let Ok(data) = serde_json::from_slice::<Value>(&ev.data) else {
                continue;
            };
            let (Some(gtin), Some(lot)) = (data["gtin"].as_str(), data["lot"].as_str()) else {
                continue;
            };
            alerts.push(trace_alert::ActiveModel {
                kind: Set(data["kind"].as_str().unwrap_or("alert").to_string()),
                lot_key: Set(lot_key(gtin, lot)),
                serial: Set(None),
                detail: Set(data.to_string()),
                time_ms: Set(time_ms),
                height: Set(Some(height as i64)),
                ..Default::default()
            });
        }
    }
    let rows = BlockRows {
        events,
        epcs,
        readings,
        alerts,
        certs,
        handovers,
    };
    write_block(db, height, rows)
        .await
        .map_err(|e| e.to_string())
}

/// Indexes of the events a `captured` receipt event says were not stored (duplicates).
fn skipped_events(receipt: &[u8]) -> std::collections::HashSet<usize> {
    Receipt::decode(receipt)
        .ok()
        .and_then(|r| {
            r.events
                .iter()
                .find(|e| e.kind == "captured")
                .and_then(|e| serde_json::from_slice::<Value>(&e.data).ok())
        })
        .and_then(|d| {
            d["skipped"].as_array().map(|l| {
                l.iter()
                    .filter_map(Value::as_u64)
                    .map(|i| i as usize)
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Rows per INSERT statement: well under SQLite's 32,766 bound parameters.
const CHUNK: usize = 1_000;

/// The read-model rows one block yields.
#[derive(Default)]
struct BlockRows {
    events: Vec<trace_event::ActiveModel>,
    epcs: Vec<trace_event_epc::ActiveModel>,
    readings: Vec<trace_reading::ActiveModel>,
    alerts: Vec<trace_alert::ActiveModel>,
    certs: Vec<trace_cert::ActiveModel>,
    handovers: Vec<trace_handover::Model>,
}

async fn write_block(db: &DatabaseConnection, height: u64, rows: BlockRows) -> Result<(), DbErr> {
    let BlockRows {
        mut events,
        epcs,
        readings,
        alerts,
        certs,
        handovers,
    } = rows;
    let txn = db.begin().await?;
    // The contract stored each event once; a re-indexed block (after a crash between the
    // node's commit and ours) finds its rows already there.
    let seqs: Vec<i64> = events.iter().filter_map(|e| set_value(&e.seq)).collect();
    if let (Some(lo), Some(hi)) = (seqs.iter().min(), seqs.iter().max()) {
        trace_event_epc::Entity::delete_many()
            .filter(trace_event_epc::Column::EventSeq.between(*lo, *hi))
            .exec(&txn)
            .await?;
        trace_event::Entity::delete_many()
            .filter(trace_event::Column::Seq.between(*lo, *hi))
            .exec(&txn)
            .await?;
    }
    trace_reading::Entity::delete_many()
        .filter(trace_reading::Column::Height.eq(height as i64))
        .exec(&txn)
        .await?;
    trace_alert::Entity::delete_many()
        .filter(trace_alert::Column::Height.eq(height as i64))
        .exec(&txn)
        .await?;
    // A capture may repeat an event the chain already held (the contract anchored it once and
    // skipped the copy): keep only the first anchored copy and its identifiers.
    let mut seen = std::collections::HashSet::new();
    let hashes: Vec<String> = events.iter().filter_map(|e| set_value(&e.hash)).collect();
    for chunk in hashes.chunks(CHUNK) {
        let found = trace_event::Entity::find()
            .filter(trace_event::Column::Hash.is_in(chunk.to_vec()))
            .all(&txn)
            .await?;
        seen.extend(found.into_iter().map(|m| m.hash));
    }
    events.retain(|e| set_value(&e.hash).is_some_and(|h| seen.insert(h)));
    let kept: std::collections::HashSet<i64> =
        events.iter().filter_map(|e| set_value(&e.seq)).collect();
    let epcs: Vec<_> = epcs
        .into_iter()
        .filter(|e| set_value(&e.event_seq).is_some_and(|s| kept.contains(&s)))
        .collect();
    for chunk in events.chunks(CHUNK) {
        trace_event::Entity::insert_many(chunk.to_vec())
            .exec(&txn)
            .await?;
    }
    // An error declaration replaces the event it corrects in query results.
    let corrected: Vec<String> = events
        .iter()
        .filter_map(|e| set_value(&e.hash))
        .filter_map(|h| h.strip_suffix(":declaration").map(str::to_string))
        .collect();
    if !corrected.is_empty() {
        trace_event::Entity::update_many()
            .col_expr(
                trace_event::Column::Superseded,
                sea_orm::sea_query::Expr::value(true),
            )
            .filter(trace_event::Column::Hash.is_in(corrected))
            .exec(&txn)
            .await?;
    }
    for chunk in epcs.chunks(CHUNK) {
        trace_event_epc::Entity::insert_many(chunk.to_vec())
            .exec(&txn)
            .await?;
    }
    for chunk in readings.chunks(CHUNK) {
        trace_reading::Entity::insert_many(chunk.to_vec())
            .exec(&txn)
            .await?;
    }
    if !alerts.is_empty() {
        trace_alert::Entity::insert_many(alerts).exec(&txn).await?;
    }
    for c in certs {
        // A certificate id is anchored once; re-indexing the block finds it already there.
        trace_cert::Entity::insert(c)
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(trace_cert::Column::Id)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
    }
    for h in handovers {
        // An offer creates the row; an answer (in a later block) updates its status.
        match trace_handover::Entity::find_by_id(h.id.clone())
            .one(&txn)
            .await?
        {
            None => {
                trace_handover::Entity::insert(trace_handover::ActiveModel {
                    id: Set(h.id),
                    from_org: Set(h.from_org),
                    to_org: Set(h.to_org),
                    status: Set(h.status),
                    offered_height: Set(h.offered_height),
                    answered_height: Set(None),
                })
                .exec_without_returning(&txn)
                .await?;
            }
            Some(existing) if h.status != "offered" => {
                let mut m: trace_handover::ActiveModel = existing.into();
                m.status = Set(h.status);
                m.answered_height = Set(Some(h.offered_height));
                trace_handover::Entity::update(m).exec(&txn).await?;
            }
            Some(_) => {}
        }
    }
    store::set_indexed_height(&txn, height).await?;
    txn.commit().await
}

fn set_value<T: Clone + Into<sea_orm::Value>>(v: &sea_orm::ActiveValue<T>) -> Option<T> {
    match v {
        sea_orm::ActiveValue::Set(x) | sea_orm::ActiveValue::Unchanged(x) => Some(x.clone()),
        sea_orm::ActiveValue::NotSet => None,
    }
}
