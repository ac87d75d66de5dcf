//! The gateway's durable store: every accepted message (the outbox until its batch is
//! anchored) and the batches. A message is acknowledged to the broker only once it is here, so
//! nothing accepted is lost; `reading_key` (device + counter) is unique, so a redelivered
//! message is stored once.

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
            /// `{did}#{seq}`: one row per device message, whatever the broker redelivers.
            #[sea_orm(unique)]
            pub reading_key: String,
            #[sea_orm(indexed)]
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
            #[sea_orm(indexed)]
            pub batch_id: Option<String>,
            pub leaf: Option<i32>,
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
            vec![Box::new(M0001Gateway)]
        }
        fn migration_table_name() -> DynIden {
            Alias::new("iot_migrations").into_iden()
        }
    }

    #[derive(DeriveMigrationName)]
    struct M0001Gateway;

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

/// Creates the gateway's tables if needed.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    migrations::Migrator::up(db, None).await
}
