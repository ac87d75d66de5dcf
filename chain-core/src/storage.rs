//! Persistent storage through sea-orm: SQLite (default, WAL) or PostgreSQL.
//!
//! Invariant: a block is committed in ONE database transaction together with its transactions,
//! receipts, events, state values and state-tree nodes. A node killed at any instant therefore
//! restarts either before or after the block, never in between.
//!
//! Admitted transactions are kept in a durable pending table (a separate SQLite file, so
//! admission never queues behind a block commit for SQLite's writer lock). Their rows are removed
//! after their block commits; a crash in between leaves rows that the restarted node re-admits
//! and drops as already committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::Duration;

use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use sea_orm_migration::prelude::*;

pub mod entities {
    pub mod block {
        use sea_orm::entity::prelude::*;
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "block")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub height: i64,
            #[sea_orm(unique)]
            pub hash: Vec<u8>,
            pub header: Vec<u8>,
            pub commit: Vec<u8>,
            /// The canonical validator set that signed this block.
            pub validator_set: Vec<u8>,
            pub time_ms: i64,
            pub tx_count: i32,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }
    pub mod tx {
        use sea_orm::entity::prelude::*;
        /// Committed transactions. The primary key is the chain position (`tx_seq`), so rows
        /// are appended in order; lookups by id go through the small `id_prefix` index rather
        /// than an index of full 32-byte hashes, whose random inserts dominated commit cost.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "tx")]
        pub struct Model {
            /// `height << 20 | idx` (see `tx_seq`).
            #[sea_orm(primary_key, auto_increment = false)]
            pub seq: i64,
            #[sea_orm(indexed)]
            pub id_prefix: i64,
            pub id: Vec<u8>,
            pub height: i64,
            pub idx: i32,
            #[sea_orm(indexed)]
            pub sender: String,
            pub nonce: i64,
            pub contract: String,
            pub method: String,
            pub raw: Vec<u8>,
            pub receipt: Vec<u8>,
            pub ok: bool,
            pub code: String,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }
    pub mod event {
        use sea_orm::entity::prelude::*;
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "event")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub height: i64,
            #[sea_orm(primary_key, auto_increment = false)]
            pub tx_idx: i32,
            #[sea_orm(primary_key, auto_increment = false)]
            pub ev_idx: i32,
            pub tx_id: Vec<u8>,
            #[sea_orm(indexed)]
            pub contract: String,
            pub kind: String,
            pub data: String,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }
    pub mod state_key {
        use sea_orm::entity::prelude::*;
        /// Preimages of state-tree key hashes, so state can be listed and explained. Keyed by
        /// (contract, key), which application keys cluster on, not by the random key hash.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "state_key")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub contract: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub key: Vec<u8>,
            pub key_hash: Vec<u8>,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }
    pub mod jmt_value {
        use sea_orm::entity::prelude::*;
        /// Every version of every state value (NULL = deleted at that version). Rows are
        /// appended; reads use the (key_prefix, version) index and then compare the full hash.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "jmt_value")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            /// The first 8 bytes of `key_hash`, big-endian, as a signed integer.
            pub key_prefix: i64,
            pub key_hash: Vec<u8>,
            pub version: i64,
            pub value: Option<Vec<u8>>,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }
    pub mod jmt_node {
        use sea_orm::entity::prelude::*;
        /// Jellyfish Merkle tree nodes, borsh-encoded as the jmt crate defines them.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "jmt_node")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub node_key: Vec<u8>,
            pub node: Vec<u8>,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }
    pub mod pending_tx {
        use sea_orm::entity::prelude::*;
        /// Admitted but not yet committed transactions: the durable mempool, so an
        /// acknowledged transaction survives a crash.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "pending_tx")]
        pub struct Model {
            /// Admission order, assigned by the node. Rows are appended and removed in roughly
            /// the same order, so the pool's churn touches few database pages.
            #[sea_orm(primary_key, auto_increment = false)]
            pub seq: i64,
            pub raw: Vec<u8>,
            pub received_ms: i64,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }
    pub mod meta {
        use sea_orm::entity::prelude::*;
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "meta")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub key: String,
            pub value: Vec<u8>,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }
}

use entities::*;

mod migrations {
    use sea_orm::{EntityTrait, Schema};
    use sea_orm_migration::prelude::*;

    pub struct Migrator;

    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(M0002Chain)]
        }
    }

    /// The name of the pre-release schema (full-hash indexes), which cannot be upgraded in place.
    pub const RETIRED_SCHEMA: &str = "m0001_chain";

    pub struct M0002Chain;
    impl MigrationName for M0002Chain {
        fn name(&self) -> &str {
            "m0002_chain"
        }
    }

    async fn create<E: EntityTrait>(m: &SchemaManager<'_>, e: E) -> Result<(), DbErr> {
        let schema = Schema::new(m.get_database_backend());
        m.create_table(schema.create_table_from_entity(e)).await?;
        for idx in schema.create_index_from_entity(e) {
            m.create_index(idx).await?;
        }
        Ok(())
    }

    /// Reads of a value "as of version v" walk this index backwards from (prefix, v).
    async fn value_index(m: &SchemaManager<'_>) -> Result<(), DbErr> {
        use super::entities::jmt_value;
        m.create_index(
            Index::create()
                .name("idx_jmt_value_prefix_version")
                .table(jmt_value::Entity)
                .col(jmt_value::Column::KeyPrefix)
                .col(jmt_value::Column::Version)
                .to_owned(),
        )
        .await
    }

    /// The durable pending pool lives in its own SQLite file so that admitting transactions
    /// never waits for SQLite's single writer lock held by a block commit.
    pub struct PendingMigrator;

    impl MigratorTrait for PendingMigrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(M0002Pending)]
        }
    }

    /// The pre-release pending pool keyed by transaction id.
    pub const RETIRED_PENDING_SCHEMA: &str = "m0001_pending";

    pub struct M0002Pending;
    impl MigrationName for M0002Pending {
        fn name(&self) -> &str {
            "m0002_pending"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for M0002Pending {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            create(m, super::entities::pending_tx::Entity).await
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for M0002Chain {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            use super::entities::*;
            create(m, block::Entity).await?;
            create(m, tx::Entity).await?;
            create(m, event::Entity).await?;
            create(m, state_key::Entity).await?;
            create(m, jmt_value::Entity).await?;
            value_index(m).await?;
            create(m, jmt_node::Entity).await?;
            create(m, pending_tx::Entity).await?;
            create(m, meta::Entity).await?;
            Ok(())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// Everything a committed block writes, prepared before the database transaction opens.
pub struct BlockWrite {
    pub height: u64,
    pub hash: Vec<u8>,
    pub header: Vec<u8>,
    pub commit: Vec<u8>,
    pub validator_set: Vec<u8>,
    pub time_ms: u64,
    pub txs: Vec<TxRow>,
    pub events: Vec<EventRow>,
    /// (key_hash, contract, raw key) for keys first seen in this block.
    pub new_keys: Vec<(Vec<u8>, String, Vec<u8>)>,
    /// (key_hash, value) written at this block's version.
    pub values: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// (borsh node key, borsh node)
    pub nodes: Vec<(Vec<u8>, Vec<u8>)>,
}

pub struct TxRow {
    pub id: Vec<u8>,
    pub idx: u32,
    pub sender: String,
    pub nonce: u64,
    pub contract: String,
    pub method: String,
    pub raw: Vec<u8>,
    pub receipt: Vec<u8>,
    pub ok: bool,
    pub code: String,
}

pub struct EventRow {
    pub tx_idx: u32,
    pub ev_idx: u32,
    pub tx_id: Vec<u8>,
    pub contract: String,
    pub kind: String,
    pub data: String,
}

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// Block commits. On SQLite a single connection of its own with a large page cache:
    /// SQLite discards a connection's cache whenever another connection changed the file, so
    /// block writes spread over the shared pool re-read every index page they touch from the
    /// OS on each block; the one writer keeps them. On PostgreSQL the shared pool.
    writer: DatabaseConnection,
    /// Where pending (admitted, uncommitted) transactions are kept: a second SQLite file next
    /// to the chain database, or the same PostgreSQL database.
    pending: DatabaseConnection,
    /// SQLite only: copies of the write-ahead logs into the database files, run beside the
    /// writers instead of inside their commits.
    checkpoints: Option<[Checkpointer; 2]>,
}

/// Runs SQLite's passive WAL checkpoint in the background, at most one at a time per file.
///
/// With SQLite's automatic checkpoint, the commit that crosses the WAL size threshold copies
/// the log into the database file and fsyncs it before returning: for the node that was about
/// a third of every block commit (and of every admission write), right on the path a client
/// waits on. A passive checkpoint neither waits for nor blocks readers and writers, so running
/// it after each commit keeps the log short without making anyone wait. Automatic
/// checkpoints stay on at a high threshold as a safety net (a checkpoint that cannot finish
/// because a long read holds old pages).
#[derive(Clone)]
struct Checkpointer {
    db: DatabaseConnection,
    running: Arc<AtomicBool>,
}

impl Checkpointer {
    fn new(db: &DatabaseConnection) -> Self {
        Self {
            db: db.clone(),
            running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Start a checkpoint unless one is running (the running one will cover this commit's
    /// pages or the next call will).
    fn kick(&self) {
        if self.running.swap(true, AtomicOrdering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let stmt = sea_orm::Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA wal_checkpoint(PASSIVE)".to_string(),
            );
            if let Err(e) = me.db.query_one_raw(stmt).await {
                tracing::warn!("WAL checkpoint failed (retried after the next commit): {e}");
            }
            me.running.store(false, AtomicOrdering::Release);
        });
    }
}

/// WAL pages after which a commit checkpoints by itself (64 MiB; normally the background
/// checkpoint keeps the log far shorter).
const WAL_AUTOCHECKPOINT_PAGES: &str = "16384";

/// `sqlite://dir/chain.db?mode=rwc` → `sqlite://dir/chain.pending.db?mode=rwc`.
fn pending_sqlite_url(url: &str) -> String {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let path = match path.strip_suffix(".db") {
        Some(stem) => format!("{stem}.pending.db"),
        None => format!("{path}.pending"),
    };
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

/// What a connection pool is for (SQLite sizes them differently).
#[derive(Clone, Copy, PartialEq)]
enum PoolRole {
    /// Readers and occasional writers: WAL lets API reads proceed while a block commits.
    Shared,
    /// One long-lived connection that does the bulk writes, with a page cache that survives
    /// between them (only writes by other connections invalidate it).
    Writer,
}

/// Prepared statements each SQLite connection keeps (sqlx's default is 100). Multi-row inserts
/// and `IN (…)` lookups of every size are distinct statements, and one with thousands of
/// parameters holds as much memory as its thousands of values: a hundred of them per connection
/// was a large share of the node's memory. A few dozen keep the repeated ones.
pub const STATEMENT_CACHE: usize = 24;

/// SQLite page cache of the writer connection, KiB (negative `cache_size` means KiB).
const WRITER_CACHE_KIB: &str = "-32768";

async fn connect(url: &str, role: PoolRole) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(url.to_string());
    opts.sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30));
    if url.starts_with("sqlite:") {
        match role {
            PoolRole::Shared => opts.max_connections(8).min_connections(1),
            PoolRole::Writer => opts
                .max_connections(1)
                .min_connections(1)
                // The connection (and its cache) is kept for the life of the node.
                .idle_timeout(None)
                .max_lifetime(None),
        };
        opts.map_sqlx_sqlite_opts(move |o| {
            let o = if role == PoolRole::Writer {
                o.pragma("cache_size", WRITER_CACHE_KIB)
            } else {
                o
            };
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30))
                .create_if_missing(true)
                // Statement journals of multi-row inserts would otherwise go to temporary
                // files: they were the largest share of the node's disk writes.
                .pragma("temp_store", "memory")
                .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
                .statement_cache_capacity(STATEMENT_CACHE)
        });
    } else {
        opts.max_connections(16).min_connections(1);
    }
    Database::connect(opts).await
}

/// A database created by the pre-release schema cannot be opened: say so plainly instead of
/// failing later on a missing column.
async fn refuse_retired_schema(db: &DatabaseConnection, retired: &str) -> Result<(), StorageError> {
    let stmt = sea_orm::Statement::from_string(
        db.get_database_backend(),
        format!("SELECT version FROM seaql_migrations WHERE version = '{retired}'"),
    );
    // No migrations table yet means a new database.
    if let Ok(Some(_)) = db.query_one_raw(stmt).await {
        return Err(StorageError::Corrupt(
            "this database was created by an older pre-release schema; move it away and run \
             `trellis init` again"
                .into(),
        ));
    }
    Ok(())
}

/// Rows per multi-row INSERT, below both SQLite's and PostgreSQL's bind-parameter limits.
const CHUNK_ROWS: usize = 2000;

fn i64_of(v: u64) -> i64 {
    v as i64
}

/// Position of a transaction in the chain: height in the high bits, index in the low 20 (a
/// block holds at most `MAX_BLOCK_TXS` transactions).
pub fn tx_seq(height: u64, idx: u32) -> i64 {
    i64_of((height << 20) | u64::from(idx))
}

/// The most transactions one block may hold (the index part of `tx_seq`).
pub const MAX_BLOCK_TXS: usize = 1 << 20;

/// The first 8 bytes of a hash as a signed integer: a compact index key for hash lookups.
pub fn hash_prefix(hash: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    let n = hash.len().min(8);
    b[..n].copy_from_slice(&hash[..n]);
    i64::from_be_bytes(b)
}

impl Store {
    /// Connect, apply pragmas and run pending migrations.
    ///
    /// `url` is `sqlite://path?mode=rwc` or `postgres://…`.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        let db = connect(url, PoolRole::Shared).await?;
        refuse_retired_schema(&db, migrations::RETIRED_SCHEMA).await?;
        migrations::Migrator::up(&db, None).await?;
        let writer = if url.starts_with("sqlite:") {
            connect(url, PoolRole::Writer).await?
        } else {
            db.clone()
        };
        let pending = if url.starts_with("sqlite:") {
            // Admission inserts, commits delete, only a restart reads: one connection.
            let p = connect(&pending_sqlite_url(url), PoolRole::Writer).await?;
            refuse_retired_schema(&p, migrations::RETIRED_PENDING_SCHEMA).await?;
            migrations::PendingMigrator::up(&p, None).await?;
            p
        } else {
            db.clone()
        };
        let checkpoints = url
            .starts_with("sqlite:")
            .then(|| [Checkpointer::new(&db), Checkpointer::new(&pending)]);
        Ok(Self {
            db,
            writer,
            pending,
            checkpoints,
        })
    }

    pub fn conn(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    pub async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(meta::Entity::find_by_id(key.to_string())
            .one(&self.db)
            .await?
            .map(|m| m.value))
    }

    pub async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let stmt = Query::insert()
            .into_table(meta::Entity)
            .columns([meta::Column::Key, meta::Column::Value])
            .values_panic([key.into(), value.to_vec().into()])
            .on_conflict(
                OnConflict::column(meta::Column::Key)
                    .update_column(meta::Column::Value)
                    .to_owned(),
            )
            .to_owned();
        self.db.execute(&stmt).await?;
        Ok(())
    }

    pub async fn tip(&self) -> Result<Option<block::Model>, StorageError> {
        Ok(block::Entity::find()
            .order_by_desc(block::Column::Height)
            .one(&self.db)
            .await?)
    }

    pub async fn block_by_height(&self, h: u64) -> Result<Option<block::Model>, StorageError> {
        Ok(block::Entity::find_by_id(i64_of(h)).one(&self.db).await?)
    }

    pub async fn block_by_hash(&self, hash: &[u8]) -> Result<Option<block::Model>, StorageError> {
        Ok(block::Entity::find()
            .filter(block::Column::Hash.eq(hash.to_vec()))
            .one(&self.db)
            .await?)
    }

    pub async fn blocks_desc(
        &self,
        before: Option<u64>,
        limit: u64,
    ) -> Result<Vec<block::Model>, StorageError> {
        let mut q = block::Entity::find().order_by_desc(block::Column::Height);
        if let Some(b) = before {
            q = q.filter(block::Column::Height.lt(i64_of(b)));
        }
        Ok(q.limit(limit).all(&self.db).await?)
    }

    pub async fn tx(&self, id: &[u8]) -> Result<Option<tx::Model>, StorageError> {
        Ok(tx::Entity::find()
            .filter(tx::Column::IdPrefix.eq(hash_prefix(id)))
            .filter(tx::Column::Id.eq(id.to_vec()))
            .one(&self.db)
            .await?)
    }

    /// Latest transactions, newest first, optionally before a chain position (`tx_seq`).
    pub async fn txs_desc(
        &self,
        before_seq: Option<i64>,
        limit: u64,
    ) -> Result<Vec<tx::Model>, StorageError> {
        let mut q = tx::Entity::find().order_by_desc(tx::Column::Seq);
        if let Some(b) = before_seq {
            q = q.filter(tx::Column::Seq.lt(b));
        }
        Ok(q.limit(limit).all(&self.db).await?)
    }

    /// Keys of `contract` starting with `prefix`, in key order, after `after` (paging).
    pub async fn state_keys_with_prefix(
        &self,
        contract: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u64,
    ) -> Result<Vec<state_key::Model>, StorageError> {
        let mut q = state_key::Entity::find()
            .filter(state_key::Column::Contract.eq(contract))
            .filter(state_key::Column::Key.gte(prefix.to_vec()));
        if let Some(a) = after {
            q = q.filter(state_key::Column::Key.gt(a.to_vec()));
        }
        // Keys sharing the prefix form one contiguous range: [prefix, prefix with its last
        // byte incremented).
        let mut end = prefix.to_vec();
        while let Some(last) = end.pop() {
            if last < u8::MAX {
                end.push(last + 1);
                break;
            }
        }
        if !end.is_empty() {
            q = q.filter(state_key::Column::Key.lt(end));
        }
        Ok(q.order_by_asc(state_key::Column::Key)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    pub async fn txs_in_block(&self, height: u64) -> Result<Vec<tx::Model>, StorageError> {
        Ok(tx::Entity::find()
            .filter(tx::Column::Seq.gte(tx_seq(height, 0)))
            .filter(tx::Column::Seq.lt(tx_seq(height + 1, 0)))
            .order_by_asc(tx::Column::Seq)
            .all(&self.db)
            .await?)
    }

    pub async fn txs_by_sender(
        &self,
        sender: &str,
        limit: u64,
    ) -> Result<Vec<tx::Model>, StorageError> {
        Ok(tx::Entity::find()
            .filter(tx::Column::Sender.eq(sender))
            .order_by_desc(tx::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    pub async fn events(
        &self,
        contract: Option<&str>,
        kind: Option<&str>,
        from_height: Option<u64>,
        to_height: Option<u64>,
        limit: u64,
    ) -> Result<Vec<event::Model>, StorageError> {
        let mut q = event::Entity::find();
        if let Some(c) = contract {
            q = q.filter(event::Column::Contract.eq(c));
        }
        if let Some(k) = kind {
            q = q.filter(event::Column::Kind.eq(k));
        }
        if let Some(f) = from_height {
            q = q.filter(event::Column::Height.gte(i64_of(f)));
        }
        if let Some(t) = to_height {
            q = q.filter(event::Column::Height.lte(i64_of(t)));
        }
        Ok(q.order_by_asc(event::Column::Height)
            .order_by_asc(event::Column::TxIdx)
            .order_by_asc(event::Column::EvIdx)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Every key hash ever written, in pages of `page` (for rebuilding in-memory indexes).
    pub async fn for_each_key_hash(
        &self,
        page: u64,
        mut f: impl FnMut(&[u8]),
    ) -> Result<(), StorageError> {
        let mut after: Option<(String, Vec<u8>)> = None;
        loop {
            let mut q = state_key::Entity::find();
            if let Some((c, k)) = &after {
                q = q.filter(
                    Condition::any()
                        .add(state_key::Column::Contract.gt(c.clone()))
                        .add(
                            Condition::all()
                                .add(state_key::Column::Contract.eq(c.clone()))
                                .add(state_key::Column::Key.gt(k.clone())),
                        ),
                );
            }
            let rows = q
                .order_by_asc(state_key::Column::Contract)
                .order_by_asc(state_key::Column::Key)
                .limit(page)
                .all(&self.db)
                .await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = Some((last.contract.clone(), last.key.clone()));
            for r in &rows {
                f(&r.key_hash);
            }
        }
    }

    pub async fn state_keys(
        &self,
        contract: &str,
        after: Option<&[u8]>,
        limit: u64,
    ) -> Result<Vec<state_key::Model>, StorageError> {
        let mut q = state_key::Entity::find().filter(state_key::Column::Contract.eq(contract));
        if let Some(a) = after {
            q = q.filter(state_key::Column::Key.gt(a.to_vec()));
        }
        Ok(q.order_by_asc(state_key::Column::Key)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Value of `key_hash` as of `version` (None if never set or deleted).
    pub async fn value_at(
        &self,
        key_hash: &[u8],
        version: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(jmt_value::Entity::find()
            .filter(jmt_value::Column::KeyPrefix.eq(hash_prefix(key_hash)))
            .filter(jmt_value::Column::Version.lte(i64_of(version)))
            .filter(jmt_value::Column::KeyHash.eq(key_hash.to_vec()))
            .order_by_desc(jmt_value::Column::Version)
            .one(&self.db)
            .await?
            .and_then(|m| m.value))
    }

    pub async fn node(&self, node_key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(jmt_node::Entity::find_by_id(node_key.to_vec())
            .one(&self.db)
            .await?
            .map(|m| m.node))
    }

    pub async fn nodes(&self, keys: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(CHUNK_ROWS) {
            let rows = jmt_node::Entity::find()
                .filter(jmt_node::Column::NodeKey.is_in(chunk.to_vec()))
                .all(&self.db)
                .await?;
            out.extend(rows.into_iter().map(|m| (m.node_key, m.node)));
        }
        Ok(out)
    }

    pub async fn pending_all(&self) -> Result<Vec<pending_tx::Model>, StorageError> {
        Ok(pending_tx::Entity::find()
            .order_by_asc(pending_tx::Column::Seq)
            .all(&self.pending)
            .await?)
    }

    /// Durably record admitted transactions (one database transaction for the whole batch).
    pub async fn pending_insert(&self, rows: &[(i64, Vec<u8>, u64)]) -> Result<(), StorageError> {
        if rows.is_empty() {
            return Ok(());
        }
        let txn = self.pending.begin().await?;
        for chunk in rows.chunks(CHUNK_ROWS) {
            let mut stmt = Query::insert();
            stmt.into_table(pending_tx::Entity).columns([
                pending_tx::Column::Seq,
                pending_tx::Column::Raw,
                pending_tx::Column::ReceivedMs,
            ]);
            for (seq, raw, ms) in chunk {
                stmt.values_panic([(*seq).into(), raw.clone().into(), i64_of(*ms).into()]);
            }
            stmt.on_conflict(
                OnConflict::column(pending_tx::Column::Seq)
                    .do_nothing()
                    .to_owned(),
            );
            txn.execute(&stmt).await?;
        }
        txn.commit().await?;
        if let Some([_, pending]) = &self.checkpoints {
            pending.kick();
        }
        Ok(())
    }

    /// The highest admission sequence number in the pending pool.
    pub async fn pending_max_seq(&self) -> Result<Option<i64>, StorageError> {
        Ok(pending_tx::Entity::find()
            .select_only()
            .column(pending_tx::Column::Seq)
            .order_by_desc(pending_tx::Column::Seq)
            .limit(1)
            .into_tuple::<i64>()
            .one(&self.pending)
            .await?)
    }

    pub async fn pending_delete(&self, seqs: &[i64]) -> Result<(), StorageError> {
        for chunk in seqs.chunks(CHUNK_ROWS) {
            let stmt = Query::delete()
                .from_table(pending_tx::Entity)
                .and_where(Expr::col(pending_tx::Column::Seq).is_in(chunk.iter().copied()))
                .to_owned();
            self.pending.execute(&stmt).await?;
        }
        Ok(())
    }

    /// Commit a block and everything it implies atomically.
    pub async fn commit_block(&self, w: &BlockWrite) -> Result<(), StorageError> {
        let t0 = std::time::Instant::now();
        let txn = self.writer.begin().await?;
        let stmt = Query::insert()
            .into_table(block::Entity)
            .columns([
                block::Column::Height,
                block::Column::Hash,
                block::Column::Header,
                block::Column::Commit,
                block::Column::ValidatorSet,
                block::Column::TimeMs,
                block::Column::TxCount,
            ])
            .values_panic([
                i64_of(w.height).into(),
                w.hash.clone().into(),
                w.header.clone().into(),
                w.commit.clone().into(),
                w.validator_set.clone().into(),
                i64_of(w.time_ms).into(),
                (w.txs.len() as i32).into(),
            ])
            .to_owned();
        txn.execute(&stmt).await?;

        for chunk in w.txs.chunks(CHUNK_ROWS / 4) {
            let mut stmt = Query::insert();
            stmt.into_table(tx::Entity).columns([
                tx::Column::Seq,
                tx::Column::IdPrefix,
                tx::Column::Id,
                tx::Column::Height,
                tx::Column::Idx,
                tx::Column::Sender,
                tx::Column::Nonce,
                tx::Column::Contract,
                tx::Column::Method,
                tx::Column::Raw,
                tx::Column::Receipt,
                tx::Column::Ok,
                tx::Column::Code,
            ]);
            for t in chunk {
                stmt.values_panic([
                    tx_seq(w.height, t.idx).into(),
                    hash_prefix(&t.id).into(),
                    t.id.clone().into(),
                    i64_of(w.height).into(),
                    (t.idx as i32).into(),
                    t.sender.clone().into(),
                    i64_of(t.nonce).into(),
                    t.contract.clone().into(),
                    t.method.clone().into(),
                    t.raw.clone().into(),
                    t.receipt.clone().into(),
                    t.ok.into(),
                    t.code.clone().into(),
                ]);
            }
            txn.execute(&stmt).await?;
        }

        let t_txs = t0.elapsed();
        for chunk in w.events.chunks(CHUNK_ROWS / 4) {
            let mut stmt = Query::insert();
            stmt.into_table(event::Entity).columns([
                event::Column::Height,
                event::Column::TxIdx,
                event::Column::EvIdx,
                event::Column::TxId,
                event::Column::Contract,
                event::Column::Kind,
                event::Column::Data,
            ]);
            for e in chunk {
                stmt.values_panic([
                    i64_of(w.height).into(),
                    (e.tx_idx as i32).into(),
                    (e.ev_idx as i32).into(),
                    e.tx_id.clone().into(),
                    e.contract.clone().into(),
                    e.kind.clone().into(),
                    e.data.clone().into(),
                ]);
            }
            txn.execute(&stmt).await?;
        }

        let t_events = t0.elapsed();
        for chunk in w.new_keys.chunks(CHUNK_ROWS / 2) {
            let mut stmt = Query::insert();
            stmt.into_table(state_key::Entity).columns([
                state_key::Column::Contract,
                state_key::Column::Key,
                state_key::Column::KeyHash,
            ]);
            for (h, c, k) in chunk {
                stmt.values_panic([c.clone().into(), k.clone().into(), h.clone().into()]);
            }
            stmt.on_conflict(
                OnConflict::columns([state_key::Column::Contract, state_key::Column::Key])
                    .do_nothing()
                    .to_owned(),
            );
            txn.execute(&stmt).await?;
        }

        let t_keys = t0.elapsed();
        for chunk in w.values.chunks(CHUNK_ROWS / 2) {
            let mut stmt = Query::insert();
            stmt.into_table(jmt_value::Entity).columns([
                jmt_value::Column::KeyPrefix,
                jmt_value::Column::KeyHash,
                jmt_value::Column::Version,
                jmt_value::Column::Value,
            ]);
            for (h, v) in chunk {
                stmt.values_panic([
                    hash_prefix(h).into(),
                    h.clone().into(),
                    i64_of(w.height).into(),
                    v.clone().into(),
                ]);
            }
            txn.execute(&stmt).await?;
        }

        let t_values = t0.elapsed();
        for chunk in w.nodes.chunks(CHUNK_ROWS) {
            let mut stmt = Query::insert();
            stmt.into_table(jmt_node::Entity)
                .columns([jmt_node::Column::NodeKey, jmt_node::Column::Node]);
            for (k, n) in chunk {
                stmt.values_panic([k.clone().into(), n.clone().into()]);
            }
            // A node key embeds its version, so a re-run after a crash writes identical rows.
            stmt.on_conflict(
                OnConflict::column(jmt_node::Column::NodeKey)
                    .do_nothing()
                    .to_owned(),
            );
            txn.execute(&stmt).await?;
        }
        let t_nodes = t0.elapsed();
        txn.commit().await?;
        if let Some([chain, _]) = &self.checkpoints {
            chain.kick();
        }
        tracing::debug!(
            height = w.height,
            txs_ms = t_txs.as_millis() as u64,
            events_ms = (t_events - t_txs).as_millis() as u64,
            keys_ms = (t_keys - t_events).as_millis() as u64,
            values_ms = (t_values - t_keys).as_millis() as u64,
            nodes_ms = (t_nodes - t_values).as_millis() as u64,
            fsync_ms = (t0.elapsed() - t_nodes).as_millis() as u64,
            nodes = w.nodes.len(),
            "block rows written"
        );
        Ok(())
    }
}
