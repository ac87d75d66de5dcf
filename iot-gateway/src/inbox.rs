//! The gateway's inbox: every message the broker delivers is appended here — one statement, one
//! transaction, one sync to disk — before it is acknowledged. Brokers cap the QoS 1 messages a
//! session may leave unacknowledged (rumqttd: 100), so the gateway's rate is that window over the
//! time to acknowledge; with the inbox, that time is one append instead of verification plus the
//! store. Messages are then verified and stored in arrival order from memory; whatever the inbox
//! still holds at start (a crash came between the append and the store) goes through the
//! pipeline again first, flagged as redelivered, so a message stored before the crash is
//! recognised by its stored copy and not stored twice.
//!
//! The inbox is a SQLite file of its own (`gateway.inbox.db` beside `gateway.db`): sharing the
//! store's writer would make every append wait for the store's inserts.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Schema, Set,
};

use crate::verify::Incoming;

pub mod iot_inbox {
    use sea_orm::entity::prelude::*;
    /// A message as the broker delivered it, held until it is stored or refused for good.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "iot_inbox")]
    pub struct Model {
        /// Arrival order.
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub topic: String,
        pub payload: Vec<u8>,
        pub received_ms: i64,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

/// Most rows per insert statement (four values each, well under SQLite's variable limit).
const ROWS_PER_STATEMENT: usize = 2_000;

pub struct Inbox {
    db: DatabaseConnection,
    /// The sequence number the next appended message gets (one appending task at a time).
    next_seq: AtomicI64,
}

impl Inbox {
    /// Opens (creating if needed) the inbox at `path`: WAL with full sync, one connection.
    pub async fn open(path: &Path) -> Result<Self, DbErr> {
        // A small cache: the inbox is appended to and emptied from the front.
        let db = crate::store::connect(path, 1, 4 * 1024).await?;
        let schema = Schema::new(db.get_database_backend());
        db.execute(
            &schema
                .create_table_from_entity(iot_inbox::Entity)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        let last: Option<i64> = iot_inbox::Entity::find()
            .select_only()
            .column_as(iot_inbox::Column::Seq.max(), "seq")
            .into_tuple()
            .one(&db)
            .await?
            .flatten();
        Ok(Self {
            db,
            next_seq: AtomicI64::new(last.unwrap_or(0) + 1),
        })
    }

    /// Appends `msgs` durably, in order; returns the sequence number of the last (0 for none).
    /// All or nothing: on an error none of them is in the inbox.
    pub async fn append(&self, msgs: &[Incoming]) -> Result<i64, DbErr> {
        if msgs.is_empty() {
            return Ok(0);
        }
        let first = self.next_seq.load(Ordering::SeqCst);
        let rows = |range: std::ops::Range<usize>| {
            msgs[range.clone()]
                .iter()
                .zip(range)
                .map(|(m, i)| iot_inbox::ActiveModel {
                    seq: Set(first + i as i64),
                    topic: Set(m.topic.clone()),
                    payload: Set(m.payload.clone()),
                    received_ms: Set(m.received_ms),
                })
                .collect::<Vec<_>>()
        };
        if msgs.len() <= ROWS_PER_STATEMENT {
            // One statement is one transaction: no BEGIN and COMMIT to wait for.
            iot_inbox::Entity::insert_many(rows(0..msgs.len()))
                .exec_without_returning(&self.db)
                .await?;
        } else {
            use sea_orm::TransactionTrait;
            let txn = self.db.begin().await?;
            let mut start = 0;
            while start < msgs.len() {
                let end = (start + ROWS_PER_STATEMENT).min(msgs.len());
                iot_inbox::Entity::insert_many(rows(start..end))
                    .exec_without_returning(&txn)
                    .await?;
                start = end;
            }
            txn.commit().await?;
        }
        let last = first + msgs.len() as i64 - 1;
        self.next_seq.store(last + 1, Ordering::SeqCst);
        Ok(last)
    }

    /// What the inbox holds, oldest first, with its sequence numbers: after a crash, messages
    /// that may not have been stored. They come back flagged as redelivered.
    pub async fn held(&self) -> Result<Vec<(i64, Incoming)>, DbErr> {
        let rows = iot_inbox::Entity::find()
            .order_by_asc(iot_inbox::Column::Seq)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.seq,
                    Incoming {
                        topic: r.topic,
                        payload: r.payload,
                        received_ms: r.received_ms,
                        redelivered: true,
                    },
                )
            })
            .collect())
    }

    /// Forgets the messages up to `through` (stored, or refused for good), then lets the WAL's
    /// pages go back to the database file without waiting for anyone.
    pub async fn release(&self, through: i64) -> Result<(), DbErr> {
        iot_inbox::Entity::delete_many()
            .filter(iot_inbox::Column::Seq.lte(through))
            .exec(&self.db)
            .await?;
        crate::store::checkpoint(&self.db).await
    }

    /// How many messages it holds.
    pub async fn held_count(&self) -> Result<u64, DbErr> {
        let n: Option<i64> = iot_inbox::Entity::find()
            .select_only()
            .column_as(iot_inbox::Column::Seq.count(), "n")
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(i: i64) -> Incoming {
        Incoming {
            topic: format!("trellis/org/devices/d{i}/readings"),
            payload: vec![i as u8; 3],
            received_ms: 1_000 + i,
            redelivered: false,
        }
    }

    #[tokio::test]
    async fn messages_stay_until_released_and_come_back_in_order_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gateway.inbox.db");
        let inbox = Inbox::open(&path).await.expect("open");
        assert_eq!(inbox.append(&[]).await.expect("append nothing"), 0);
        let first: Vec<Incoming> = (1..=3).map(message).collect();
        assert_eq!(inbox.append(&first).await.expect("append"), 3);
        let second: Vec<Incoming> = (4..=5).map(message).collect();
        assert_eq!(inbox.append(&second).await.expect("append"), 5);
        inbox.release(3).await.expect("release");
        drop(inbox);

        // As after a crash: what was not released comes back, in order, flagged as resent,
        // with the time it first arrived.
        let inbox = Inbox::open(&path).await.expect("reopen");
        let held = inbox.held().await.expect("held");
        assert_eq!(held.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![4, 5]);
        for ((_, m), original) in held.iter().zip(&second) {
            assert_eq!(m.topic, original.topic);
            assert_eq!(m.payload, original.payload);
            assert_eq!(m.received_ms, original.received_ms);
            assert!(m.redelivered);
        }
        // Numbering goes on after the held ones; an append larger than one statement is still
        // one transaction.
        assert_eq!(inbox.append(&[message(6)]).await.expect("append"), 6);
        let many: Vec<Incoming> = (0..2_500).map(message).collect();
        assert_eq!(inbox.append(&many).await.expect("append"), 2_506);
        assert_eq!(inbox.held_count().await.expect("count"), 2_503);
        inbox.release(2_506).await.expect("release all");
        assert_eq!(inbox.held_count().await.expect("count"), 0);
    }
}
