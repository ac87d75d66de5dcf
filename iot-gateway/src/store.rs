//! The gateway's durable store: every accepted message (the outbox until its batch is
//! anchored) and the batches. A message leaves the gateway's inbox (`crate::inbox`) only once
//! it is here, so nothing accepted is lost. A message is stored once: the verifier accepts a
//! device counter only above the last one stored (restored from here at start, rolled back when
//! a store fails), so a redelivered message is refused before it gets here.

use sea_orm::{DatabaseConnection, DbErr};
use sea_orm_migration::prelude::*;

pub mod entities {
    pub mod iot_reading {
        use sea_orm::entity::prelude::*;
        /// An accepted message, in arrival order (`id`).
        #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
        #[sea_orm(table_name = "iot_reading")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            /// `{did}#{seq}`, unique by the counter check. Indexed only once the message's
            /// batch closes (a partial index, see migration M0004): a unique index written at
            /// insert costs a random page write per stored message, and only closed batches
            /// have proofs to look up.
            pub reading_key: String,
            /// Not indexed: an index keyed by device takes a random page write per stored
            /// message; only the start-up scan for each device's last counter reads by device.
            pub device: String,
            pub seq: i64,
            /// `readings` or `scans`.
            pub channel: String,
            pub time_ms: i64,
            pub received_ms: i64,
            pub measurement: Option<String>,
            pub uom: Option<String>,
            pub value: Option<f64>,
            pub uri: Option<String>,
            pub read_point: Option<String>,
            /// The device's binding when the message was accepted (JSON).
            pub binding: Option<String>,
            pub org: String,
            /// The envelope exactly as received (the batch leaf).
            pub envelope: String,
            /// Set when the message's batch closes; its leaf is its position by `id` there.
            #[sea_orm(indexed)]
            pub batch_id: Option<String>,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }

    pub mod iot_batch {
        use sea_orm::entity::prelude::*;
        /// A batch of messages: `pending` until its root is anchored on chain (and its lot
        /// readings reported), then `anchored`.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "iot_batch")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: String,
            pub root: String,
            pub count: i32,
            pub first_ms: i64,
            pub last_ms: i64,
            #[sea_orm(indexed)]
            pub status: String,
            pub tx_id: Option<String>,
            pub height: Option<i64>,
            pub created_ms: i64,
            /// Gateway time when its anchoring transaction was seen committed.
            pub anchored_ms: Option<i64>,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }
}

pub use entities::*;

mod migrations {
    use super::*;

    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![
                Box::new(M0001Gateway),
                Box::new(M0002AnchoredAt),
                Box::new(M0003NoDeviceIndex),
                Box::new(M0004ReadingKeyIndexedWhenBatched),
            ]
        }
        fn migration_table_name() -> DynIden {
            Alias::new("iot_migrations").into_iden()
        }
    }

    struct M0001Gateway;

    // Named explicitly: the derive names a migration after its file (`store`, the name the
    // first one has always had), which would give both the same name.
    impl MigrationName for M0001Gateway {
        fn name(&self) -> &str {
            "store"
        }
    }

    /// Stores created before anchoring times were kept get the column (newer ones have it
    /// from the entity already).
    struct M0003NoDeviceIndex;

    impl MigrationName for M0003NoDeviceIndex {
        fn name(&self) -> &str {
            "m0003_no_device_index"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for M0003NoDeviceIndex {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            // Stores made before this migration have the index; it only slowed every insert.
            m.get_connection()
                .execute_unprepared(r#"DROP INDEX IF EXISTS "idx-iot_reading-device""#)
                .await?;
            Ok(())
        }
        async fn down(&self, _m: &SchemaManager) -> Result<(), DbErr> {
            Ok(())
        }
    }

    /// Index on `reading_key` for messages in closed batches only (the proof lookup).
    const READING_KEY_INDEX: &str = "idx-iot_reading-reading_key-batched";

    struct M0004ReadingKeyIndexedWhenBatched;

    impl MigrationName for M0004ReadingKeyIndexedWhenBatched {
        fn name(&self) -> &str {
            "m0004_reading_key_indexed_when_batched"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for M0004ReadingKeyIndexedWhenBatched {
        /// In one transaction on every backend: a gateway stopped halfway through the SQLite
        /// rebuild below must not leave its rows in the renamed table, nor the migration
        /// recorded as done.
        fn use_transaction(&self) -> Option<bool> {
            Some(true)
        }

        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            use sea_orm::{ConnectionTrait, Statement};
            let db = m.get_connection();
            let backend = db.get_database_backend();
            // Stores made before this migration declare `reading_key UNIQUE`, an index SQLite
            // cannot drop: the table is rebuilt without it, rows and ids unchanged.
            if backend == sea_orm::DbBackend::Postgres {
                db.execute_unprepared(
                    "ALTER TABLE iot_reading DROP CONSTRAINT IF EXISTS iot_reading_reading_key_key",
                )
                .await?;
            }
            let unique = if backend == sea_orm::DbBackend::Sqlite {
                let found = db
                    .query_one_raw(Statement::from_string(
                        backend,
                        "SELECT name FROM sqlite_master WHERE type = 'index' \
                         AND tbl_name = 'iot_reading' \
                         AND name LIKE 'sqlite_autoindex_iot_reading_%'",
                    ))
                    .await?;
                found.is_some()
            } else {
                false
            };
            if unique {
                use sea_orm::Iterable;
                let columns = iot_reading::Column::iter()
                    .map(|c| format!("\"{}\"", sea_orm::IdenStatic::as_str(&c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                db.execute_unprepared("ALTER TABLE iot_reading RENAME TO iot_reading_m0004")
                    .await?;
                // The renamed table's indexes keep their names until it is dropped.
                let schema = sea_orm::Schema::new(backend);
                m.create_table(schema.create_table_from_entity(iot_reading::Entity))
                    .await?;
                db.execute_unprepared(&format!(
                    "INSERT INTO iot_reading ({columns}) \
                     SELECT {columns} FROM iot_reading_m0004 ORDER BY id"
                ))
                .await?;
                db.execute_unprepared("DROP TABLE iot_reading_m0004")
                    .await?;
                for mut stmt in schema.create_index_from_entity(iot_reading::Entity) {
                    m.create_index(stmt.if_not_exists().to_owned()).await?;
                }
            }
            db.execute_unprepared(&format!(
                r#"CREATE INDEX IF NOT EXISTS "{READING_KEY_INDEX}" ON iot_reading (reading_key) WHERE batch_id IS NOT NULL"#
            ))
            .await?;
            Ok(())
        }
        async fn down(&self, _m: &SchemaManager) -> Result<(), DbErr> {
            Ok(())
        }
    }

    struct M0002AnchoredAt;

    impl MigrationName for M0002AnchoredAt {
        fn name(&self) -> &str {
            "m0002_anchored_at"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for M0002AnchoredAt {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            if !m.has_column("iot_batch", "anchored_ms").await? {
                m.alter_table(
                    Table::alter()
                        .table(Alias::new("iot_batch"))
                        .add_column(
                            ColumnDef::new(Alias::new("anchored_ms"))
                                .big_integer()
                                .null(),
                        )
                        .to_owned(),
                )
                .await?;
            }
            Ok(())
        }
        async fn down(&self, _m: &SchemaManager) -> Result<(), DbErr> {
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for M0001Gateway {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            let schema = sea_orm::Schema::new(m.get_database_backend());
            m.create_table(
                schema
                    .create_table_from_entity(iot_reading::Entity)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
            m.create_table(
                schema
                    .create_table_from_entity(iot_batch::Entity)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
            for mut stmt in schema.create_index_from_entity(iot_reading::Entity) {
                m.create_index(stmt.if_not_exists().to_owned()).await?;
            }
            for mut stmt in schema.create_index_from_entity(iot_batch::Entity) {
                m.create_index(stmt.if_not_exists().to_owned()).await?;
            }
            Ok(())
        }
        async fn down(&self, _m: &SchemaManager) -> Result<(), DbErr> {
            Ok(())
        }
    }
}

/// SQLite's page cache per connection of the store.
const STORE_CACHE_KIB: u32 = 32 * 1024;

/// Opens (creating if needed) the gateway's SQLite store at `path`: WAL with full fsync, since
/// a message leaves the inbox as soon as its insert commits.
pub async fn open(path: &std::path::Path) -> Result<DatabaseConnection, DbErr> {
    let db = connect(path, 4, STORE_CACHE_KIB).await?;
    migrate(&db).await?;
    Ok(db)
}

/// One more connection to the store at `path` (opened with [`open`] first), for the gateway's
/// writes alone (see [`crate::gateway::Gateway::with_writer`]). SQLite drops a connection's
/// page cache whenever another connection wrote: writes spread over the pool re-read their
/// index pages every time, one kept connection keeps them.
pub async fn open_writer(path: &std::path::Path) -> Result<DatabaseConnection, DbErr> {
    connect(path, 1, STORE_CACHE_KIB).await
}

/// `cache_kib`: SQLite's page cache per connection.
pub(crate) async fn connect(
    path: &std::path::Path,
    connections: u32,
    cache_kib: u32,
) -> Result<DatabaseConnection, DbErr> {
    use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
    let mut opts = sea_orm::ConnectOptions::new(format!("sqlite://{}?mode=rwc", path.display()));
    opts.sqlx_logging(false)
        .max_connections(connections)
        .min_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .map_sqlx_sqlite_opts(move |o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(std::time::Duration::from_secs(30))
                .create_if_missing(true)
                .pragma("temp_store", "memory")
                // The anchoring task checkpoints the WAL (see `checkpoint`); the automatic
                // checkpoint, run by whichever commit crosses the limit, is only a backstop,
                // so that storing device messages does not wait for it.
                .pragma("wal_autocheckpoint", "16384")
                .pragma("cache_size", format!("-{cache_kib}"))
                // Each batch size is a statement of its own (see the chain's storage).
                .statement_cache_capacity(chain_core::storage::STATEMENT_CACHE)
        });
    if connections == 1 {
        // The one connection is the point: the pool must not close and reopen it.
        opts.idle_timeout(None).max_lifetime(None);
    }
    sea_orm::Database::connect(opts).await
}

/// Creates the gateway's tables if needed.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    migrations::Migrator::up(db, None).await
}

/// Copies committed WAL pages into the database file without blocking writers (called by the
/// anchoring task, away from the path that acknowledges device messages).
pub async fn checkpoint(db: &DatabaseConnection) -> Result<(), DbErr> {
    use sea_orm::ConnectionTrait;
    if db.get_database_backend() == sea_orm::DbBackend::Sqlite {
        db.execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
            .await?;
    }
    Ok(())
}
