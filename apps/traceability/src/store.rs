//! The traceability read model: tables derived from committed `trace` transactions (events,
//! the EPCs and lots they mention, sensor readings, alerts, capture jobs) plus consumer scans,
//! which never go on chain. Everything but scans and pending capture jobs can be rebuilt from
//! the chain: the indexer remembers the last height it applied, in the same database.

use sea_orm::{ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait};
use sea_orm_migration::prelude::*;

pub mod entities {
    pub mod trace_meta {
        use sea_orm::entity::prelude::*;
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "trace_meta")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub name: String,
            pub value: i64,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }

    pub mod trace_event {
        use sea_orm::entity::prelude::*;
        /// One anchored EPCIS event. `seq` is its chain position (see `indexer::event_seq`), so
        /// paging by `seq` is stable and follows capture order.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "trace_event")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub seq: i64,
            /// Hex of the CBV 2.0 event hash (the chain's de-duplication key).
            #[sea_orm(unique)]
            pub hash: String,
            /// The document's own `eventID`, if any.
            #[sea_orm(indexed)]
            pub event_id: Option<String>,
            pub event_type: String,
            #[sea_orm(indexed)]
            pub event_time_ms: i64,
            pub record_time_ms: i64,
            pub action: Option<String>,
            pub biz_step: Option<String>,
            pub disposition: Option<String>,
            pub read_point: Option<String>,
            pub biz_location: Option<String>,
            pub capture_id: String,
            pub height: i64,
            pub tx_id: String,
            /// The event exactly as anchored (its SHA-256 is in chain state).
            pub json: String,
            /// The capturing document's `@context`, when it declared more than the standard
            /// one (needed to read the event's extension fields on their own).
            pub context: Option<String>,
            /// A later error declaration (same eventID and hash ID) replaced this event in
            /// query results.
            pub superseded: bool,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }

    pub mod trace_event_epc {
        use sea_orm::entity::prelude::*;
        /// Which EPCs (canonical Digital Link form) and lots an event names, and in what role
        /// (`epc`, `parent`, `child`, `input`, `output`, `class`…).
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "trace_event_epc")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            #[sea_orm(indexed)]
            pub epc: String,
            pub role: String,
            #[sea_orm(indexed)]
            pub event_seq: i64,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }

    pub mod trace_reading {
        use sea_orm::entity::prelude::*;
        /// Sensor readings reported for a lot (hundredths of °C / %RH).
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "trace_reading")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            #[sea_orm(indexed)]
            pub lot_key: String,
            pub device: String,
            pub time_ms: i64,
            pub temperature: Option<i64>,
            pub humidity: Option<i64>,
            pub height: i64,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }

    pub mod trace_alert {
        use sea_orm::entity::prelude::*;
        /// Excursions and recalls (from chain events) and counterfeit suspicions (from scans).
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "trace_alert")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            pub kind: String,
            #[sea_orm(indexed)]
            pub lot_key: String,
            pub serial: Option<String>,
            pub detail: String,
            pub time_ms: i64,
            pub height: Option<i64>,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }

    pub mod trace_capture {
        use sea_orm::entity::prelude::*;
        /// A capture job: accepted by `POST /epcis/capture`, finished when all its
        /// transactions are committed (or one failed).
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "trace_capture")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: String,
            pub created_ms: i64,
            pub finished_ms: Option<i64>,
            pub events: i64,
            pub txs: i32,
            pub txs_done: i32,
            pub stored: i64,
            pub duplicates: i64,
            /// `running`, `success` or `failed`.
            pub status: String,
            pub error_code: Option<String>,
            pub error_message: Option<String>,
            pub by: String,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }

    pub mod trace_cert {
        use sea_orm::entity::prelude::*;
        /// Certificates anchored on chain, by what they certify (GTIN, `gtin/lot` or GLN); the
        /// certificate itself is read from chain state.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "trace_cert")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: String,
            #[sea_orm(indexed)]
            pub subject: String,
            pub kind: String,
            pub height: i64,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }

    pub mod trace_handover {
        use sea_orm::entity::prelude::*;
        /// Custody handovers by organisation (the handover itself is read from chain state).
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "trace_handover")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: String,
            #[sea_orm(indexed)]
            pub from_org: String,
            #[sea_orm(indexed)]
            pub to_org: String,
            /// `offered`, `accepted`, `rejected` or `cancelled`.
            pub status: String,
            pub offered_height: i64,
            pub answered_height: Option<i64>,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    }

    pub mod trace_scan {
        use sea_orm::entity::prelude::*;
        /// Consumer scans of a code: who (a salted hash of the scanner) and when.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "trace_scan")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            #[sea_orm(indexed)]
            pub code: String,
            pub scanner: String,
            pub time_ms: i64,
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
            vec![Box::new(M0001Trace)]
        }
        fn migration_table_name() -> DynIden {
            Alias::new("trace_migrations").into_iden()
        }
    }

    #[derive(DeriveMigrationName)]
    struct M0001Trace;

    #[async_trait::async_trait]
    impl MigrationTrait for M0001Trace {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            let schema = sea_orm::Schema::new(m.get_database_backend());
            macro_rules! table {
                ($e:path) => {
                    m.create_table(
                        schema
                            .create_table_from_entity($e)
                            .if_not_exists()
                            .to_owned(),
                    )
                    .await?;
                };
            }
            table!(trace_meta::Entity);
            table!(trace_event::Entity);
            table!(trace_event_epc::Entity);
            table!(trace_reading::Entity);
            table!(trace_alert::Entity);
            table!(trace_capture::Entity);
            table!(trace_scan::Entity);
            table!(trace_cert::Entity);
            table!(trace_handover::Entity);
            for mut stmt in schema.create_index_from_entity(trace_handover::Entity) {
                m.create_index(stmt.if_not_exists().to_owned()).await?;
            }
            for mut stmt in schema.create_index_from_entity(trace_cert::Entity) {
                m.create_index(stmt.if_not_exists().to_owned()).await?;
            }
            for mut stmt in schema.create_index_from_entity(trace_event::Entity) {
                m.create_index(stmt.if_not_exists().to_owned()).await?;
            }
            for mut stmt in schema.create_index_from_entity(trace_event_epc::Entity) {
                m.create_index(stmt.if_not_exists().to_owned()).await?;
            }
            for mut stmt in schema.create_index_from_entity(trace_reading::Entity) {
                m.create_index(stmt.if_not_exists().to_owned()).await?;
            }
            for mut stmt in schema.create_index_from_entity(trace_alert::Entity) {
                m.create_index(stmt.if_not_exists().to_owned()).await?;
            }
            for mut stmt in schema.create_index_from_entity(trace_scan::Entity) {
                m.create_index(stmt.if_not_exists().to_owned()).await?;
            }
            Ok(())
        }
        async fn down(&self, _m: &SchemaManager) -> Result<(), DbErr> {
            Ok(())
        }
    }
}

/// Create the traceability tables if needed.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    migrations::Migrator::up(db, None).await
}

const INDEXED_HEIGHT: &str = "indexed_height";

pub async fn indexed_height<C: ConnectionTrait>(db: &C) -> Result<u64, DbErr> {
    Ok(trace_meta::Entity::find_by_id(INDEXED_HEIGHT.to_string())
        .one(db)
        .await?
        .map_or(0, |m| std::cmp::max(m.value, 0) as u64))
}

pub async fn set_indexed_height<C: ConnectionTrait>(db: &C, h: u64) -> Result<(), DbErr> {
    use sea_orm::sea_query::OnConflict;
    trace_meta::Entity::insert(trace_meta::ActiveModel {
        name: Set(INDEXED_HEIGHT.into()),
        value: Set(h as i64),
    })
    .on_conflict(
        OnConflict::column(trace_meta::Column::Name)
            .update_column(trace_meta::Column::Value)
            .to_owned(),
    )
    .exec(db)
    .await?;
    Ok(())
}
