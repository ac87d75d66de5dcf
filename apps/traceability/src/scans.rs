//! Consumer scans of serialised codes and the counterfeit rule.
//!
//! A genuine serialised item is scanned by its buyer and perhaps a few people around them; a
//! code copied onto many fakes is scanned by many unrelated phones. Each scan is recorded with a
//! salted fingerprint of the scanner (a long-lived browser cookie, never stored raw), and a code
//! scanned by more distinct scanners than the rule allows within its window is suspicious: the
//! consumer page warns and one `counterfeit` alert is raised for the owner.
//!
//! Scans are answered from memory and written to the database in batches by a background task,
//! so a burst of scans costs the consumer page no database write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect,
};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::app::ScanRule;
use crate::store::{trace_alert, trace_scan};

/// Codes whose scanners are kept in memory; older entries are reloaded from the database.
const MAX_CODES: usize = 100_000;

#[derive(Default)]
struct CodeScans {
    /// Fingerprint → last scan time (ms).
    scanners: HashMap<String, i64>,
    alerted: bool,
}

pub struct ScanBook {
    db: DatabaseConnection,
    rule: ScanRule,
    salt: [u8; 16],
    codes: Mutex<HashMap<String, CodeScans>>,
    writes: mpsc::UnboundedSender<trace_scan::ActiveModel>,
    /// Counterfeit alerts as they are raised, for the live alert pages.
    live: tokio::sync::broadcast::Sender<serde_json::Value>,
}

/// What the page needs to know about a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanVerdict {
    pub distinct_scanners: usize,
    pub suspicious: bool,
}

impl ScanBook {
    pub fn start(db: DatabaseConnection, rule: ScanRule, salt: [u8; 16]) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(db.clone(), rx));
        Arc::new(Self {
            db,
            rule,
            salt,
            codes: Mutex::new(HashMap::new()),
            writes: tx,
            live: tokio::sync::broadcast::channel(64).0,
        })
    }

    /// Counterfeit alerts from now on (`{"kind": "counterfeit", "gtin", "lot", "serial", "count"}`).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<serde_json::Value> {
        self.live.subscribe()
    }

    pub fn fingerprint(&self, scanner: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(scanner.as_bytes());
        hex::encode(&h.finalize()[..16])
    }

    /// Records a scan of `code` (e.g. `gtin/serial`) by `scanner` at `now_ms` and judges it.
    /// `lot_key` names the lot the alert is filed under.
    pub async fn scan(&self, code: &str, lot_key: &str, scanner: &str, now_ms: i64) -> ScanVerdict {
        let fp = self.fingerprint(scanner);
        let since = now_ms.saturating_sub(self.rule.window_ms as i64);
        let known = self.codes.lock().contains_key(code);
        if !known {
            // First time this process sees the code: load its recent scanners.
            let rows: Vec<(String, i64)> = trace_scan::Entity::find()
                .filter(trace_scan::Column::Code.eq(code))
                .filter(trace_scan::Column::TimeMs.gte(since))
                .select_only()
                .column(trace_scan::Column::Scanner)
                .column(trace_scan::Column::TimeMs)
                .into_tuple()
                .all(&self.db)
                .await
                .unwrap_or_default();
            let alerted = trace_alert::Entity::find()
                .filter(trace_alert::Column::Kind.eq("counterfeit"))
                .filter(trace_alert::Column::Serial.eq(code))
                .filter(trace_alert::Column::TimeMs.gte(since))
                .one(&self.db)
                .await
                .ok()
                .flatten()
                .is_some();
            let mut codes = self.codes.lock();
            if codes.len() >= MAX_CODES {
                codes.clear();
            }
            let entry = codes.entry(code.to_string()).or_default();
            for (s, t) in rows {
                let e = entry.scanners.entry(s).or_insert(t);
                *e = (*e).max(t);
            }
            entry.alerted |= alerted;
        }
        let (verdict, raise) = {
            let mut codes = self.codes.lock();
            let entry = codes.entry(code.to_string()).or_default();
            entry.scanners.retain(|_, t| *t >= since);
            entry.scanners.insert(fp.clone(), now_ms);
            let n = entry.scanners.len();
            let suspicious = n > self.rule.max_scanners as usize;
            let raise = suspicious && !entry.alerted;
            if raise {
                entry.alerted = true;
            }
            (
                ScanVerdict {
                    distinct_scanners: n,
                    suspicious,
                },
                raise,
            )
        };
        let _ = self.writes.send(trace_scan::ActiveModel {
            code: Set(code.to_string()),
            scanner: Set(fp),
            time_ms: Set(now_ms),
            ..Default::default()
        });
        if raise {
            let detail = serde_json::json!({
                "kind": "counterfeit",
                "code": code,
                "distinct_scanners": verdict.distinct_scanners,
                "max_scanners": self.rule.max_scanners,
                "window_hours": self.rule.window_ms / 3_600_000,
            });
            let alert = trace_alert::ActiveModel {
                kind: Set("counterfeit".into()),
                lot_key: Set(lot_key.to_string()),
                serial: Set(Some(code.to_string())),
                detail: Set(detail.to_string()),
                time_ms: Set(now_ms),
                height: Set(None),
                ..Default::default()
            };
            if let Err(e) = trace_alert::Entity::insert(alert).exec(&self.db).await {
                tracing::error!("recording a counterfeit alert: {e}");
            }
            let (gtin, lot) = lot_key
                .strip_prefix("lot/")
                .and_then(|k| k.split_once('/'))
                .map(|(g, l)| (g.to_string(), l.to_string()))
                .unwrap_or_else(|| {
                    (
                        code.split('/').next().unwrap_or("").to_string(),
                        String::new(),
                    )
                });
            let serial = code.split_once('/').map(|(_, s)| s).unwrap_or("");
            // Nobody listening is fine: the alert is in the database either way.
            let _ = self.live.send(serde_json::json!({
                "kind": "counterfeit",
                "gtin": gtin,
                "lot": lot,
                "serial": serial,
                "count": verdict.distinct_scanners,
            }));
        }
        verdict
    }

    /// Distinct scanners of `code` seen by this process within the window (for pages).
    pub fn known_scanners(&self, code: &str) -> Option<usize> {
        self.codes.lock().get(code).map(|c| c.scanners.len())
    }

    /// Codes currently held in memory (bounded by `MAX_CODES`).
    pub fn codes_in_memory(&self) -> usize {
        self.codes.lock().len()
    }
}

async fn write_batches(
    db: DatabaseConnection,
    mut rx: mpsc::UnboundedReceiver<trace_scan::ActiveModel>,
) {
    let mut batch = Vec::new();
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        batch.push(first);
        // Gather what arrives in the next moments into one statement.
        tokio::time::sleep(Duration::from_millis(100)).await;
        while batch.len() < 1_000 {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        if let Err(e) = trace_scan::Entity::insert_many(std::mem::take(&mut batch))
            .exec(&db)
            .await
        {
            tracing::error!("recording consumer scans: {e}");
        }
    }
}
