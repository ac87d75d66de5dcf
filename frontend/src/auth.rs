//! Web users, password sign-in, server-side sessions, CSRF tokens, sign-in rate limiting and
//! custodial signing with the user's key from the organisation's keystore.
//!
//! A web user is a login (username + Argon2id password hash) bound to a chain member and to
//! the keystore label of that member's key. Roles are never stored here: they are read from
//! the chain (system contract) on every request, so a role change on chain takes effect at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chain_core::crypto::{PublicKey, SigningKey};
use chain_core::keystore::Keystore;
use chain_core::node::{Node, Submitted, TxOutcome, now_ms};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder,
};
use sea_orm_migration::prelude::*;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub mod entities {
    pub mod web_user {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "web_user")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            #[sea_orm(unique)]
            pub username: String,
            /// Chain member id, `org/name`.
            pub member: String,
            /// Label of the member's key in the organisation's keystore (custodial signing).
            pub key_label: String,
            /// PHC string (Argon2id).
            pub password_hash: String,
            pub created_ms: i64,
            pub disabled: bool,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    pub mod web_session {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "web_session")]
        pub struct Model {
            /// SHA-256 (hex) of the session token: a database leak does not leak sessions.
            #[sea_orm(primary_key, auto_increment = false)]
            pub id_hash: String,
            pub user_id: i64,
            /// The CSRF token of this session's forms.
            pub csrf: String,
            pub created_ms: i64,
            pub last_seen_ms: i64,
            pub expires_ms: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }
}

use entities::{web_session, web_user};

mod migrations {
    use super::*;

    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(M0001Web)]
        }
        // The chain's migrations live in the same database under their own table.
        fn migration_table_name() -> DynIden {
            Alias::new("web_migrations").into_iden()
        }
    }

    #[derive(DeriveMigrationName)]
    struct M0001Web;

    #[async_trait::async_trait]
    impl MigrationTrait for M0001Web {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            let backend = m.get_database_backend();
            let schema = sea_orm::Schema::new(backend);
            m.create_table(
                schema
                    .create_table_from_entity(web_user::Entity)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
            m.create_table(
                schema
                    .create_table_from_entity(web_session::Entity)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
            m.create_index(
                Index::create()
                    .name("idx_web_session_expires")
                    .table(web_session::Entity)
                    .col(web_session::Column::ExpiresMs)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
        }
        async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.drop_table(Table::drop().table(web_session::Entity).to_owned())
                .await?;
            m.drop_table(Table::drop().table(web_user::Entity).to_owned())
                .await
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("password hashing: {0}")]
    Hash(String),
    #[error("{0}")]
    Invalid(&'static str),
}

/// Create the web tables if needed.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), AuthError> {
    migrations::Migrator::up(db, None).await?;
    Ok(())
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    // The OS RNG failing is not recoverable for a server that issues sessions.
    getrandom::fill(&mut b).unwrap_or_else(|e| panic!("operating system RNG unavailable: {e}"));
    hex::encode(b)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time comparison of two tokens.
pub fn tokens_match(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

pub const MIN_PASSWORD_LEN: usize = 10;

/// Argon2id with the crate's recommended parameters; runs off the async threads.
pub async fn hash_password(password: String) -> Result<String, AuthError> {
    let password = Zeroizing::new(password);
    tokio::task::spawn_blocking(move || {
        let mut salt_bytes = [0u8; 16];
        getrandom::fill(&mut salt_bytes).map_err(|e| AuthError::Hash(e.to_string()))?;
        let salt =
            SaltString::encode_b64(&salt_bytes).map_err(|e| AuthError::Hash(e.to_string()))?;
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AuthError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| AuthError::Hash(e.to_string()))?
}

/// A hash of a random password, so a sign-in for an unknown user costs the same time.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$dDtN9X0E8lYy7XlM5lpAkQ6mP4VgCfVQn5aoDqbPq1A";

pub async fn verify_password(password: String, hash: String) -> bool {
    let password = Zeroizing::new(password);
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// How long a session lives without use, and at most.
pub const SESSION_IDLE_MS: i64 = 8 * 3600 * 1000;
pub const SESSION_MAX_MS: i64 = 24 * 3600 * 1000;
/// `last_seen` is written at most this often (a write per page view would be wasteful).
const TOUCH_EVERY_MS: i64 = 5 * 60 * 1000;

pub struct Users {
    db: DatabaseConnection,
}

/// A valid session and its user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: web_user::Model,
    pub csrf: String,
}

impl Users {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn count(&self) -> Result<u64, AuthError> {
        use sea_orm::PaginatorTrait;
        Ok(web_user::Entity::find().count(&self.db).await?)
    }

    pub async fn by_username(&self, username: &str) -> Result<Option<web_user::Model>, AuthError> {
        Ok(web_user::Entity::find()
            .filter(web_user::Column::Username.eq(username))
            .one(&self.db)
            .await?)
    }

    pub async fn by_member(&self, member: &str) -> Result<Vec<web_user::Model>, AuthError> {
        Ok(web_user::Entity::find()
            .filter(web_user::Column::Member.eq(member))
            .order_by_asc(web_user::Column::Username)
            .all(&self.db)
            .await?)
    }

    /// Create a user; `Ok(false)` when the username is taken.
    pub async fn create(
        &self,
        username: &str,
        member: &str,
        key_label: &str,
        password: String,
    ) -> Result<bool, AuthError> {
        if password.chars().count() < MIN_PASSWORD_LEN {
            return Err(AuthError::Invalid("password too short"));
        }
        let hash = hash_password(password).await?;
        let res = web_user::Entity::insert(web_user::ActiveModel {
            username: Set(username.to_string()),
            member: Set(member.to_string()),
            key_label: Set(key_label.to_string()),
            password_hash: Set(hash),
            created_ms: Set(now_ms() as i64),
            disabled: Set(false),
            ..Default::default()
        })
        .on_conflict(
            OnConflict::column(web_user::Column::Username)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        Ok(res == 1)
    }

    /// Point a user at a new key label (after a key rotation).
    pub async fn set_key_label(&self, member: &str, key_label: &str) -> Result<(), AuthError> {
        web_user::Entity::update_many()
            .col_expr(web_user::Column::KeyLabel, Expr::value(key_label))
            .filter(web_user::Column::Member.eq(member))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Check a password; the user when it matches and the account is enabled.
    pub async fn authenticate(
        &self,
        username: &str,
        password: String,
    ) -> Result<Result<web_user::Model, &'static str>, AuthError> {
        let user = self.by_username(username).await?;
        let hash = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.to_string());
        let ok = verify_password(password, hash).await;
        Ok(match user {
            Some(u) if ok && !u.disabled => Ok(u),
            Some(u) if ok && u.disabled => Err("auth.disabled"),
            _ => Err("auth.bad_credentials"),
        })
    }

    /// Start a session; returns the token for the cookie (only its hash is stored).
    pub async fn start_session(&self, user_id: i64) -> Result<String, AuthError> {
        let token = random_token();
        let now = now_ms() as i64;
        web_session::Entity::insert(web_session::ActiveModel {
            id_hash: Set(token_hash(&token)),
            user_id: Set(user_id),
            csrf: Set(random_token()),
            created_ms: Set(now),
            last_seen_ms: Set(now),
            expires_ms: Set(now + SESSION_IDLE_MS),
        })
        .exec_without_returning(&self.db)
        .await?;
        // Expired sessions of everyone are cleaned up on sign-in (cheap: indexed).
        web_session::Entity::delete_many()
            .filter(web_session::Column::ExpiresMs.lt(now))
            .exec(&self.db)
            .await?;
        Ok(token)
    }

    /// The session for a cookie token, if it is valid; extends its idle expiry.
    pub async fn session(&self, token: &str) -> Result<Option<Session>, AuthError> {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let id = token_hash(token);
        let Some(s) = web_session::Entity::find_by_id(id.clone())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let now = now_ms() as i64;
        if s.expires_ms < now || now - s.created_ms > SESSION_MAX_MS {
            web_session::Entity::delete_by_id(id).exec(&self.db).await?;
            return Ok(None);
        }
        let Some(user) = web_user::Entity::find_by_id(s.user_id)
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        if user.disabled {
            return Ok(None);
        }
        if now - s.last_seen_ms > TOUCH_EVERY_MS {
            web_session::Entity::update_many()
                .col_expr(web_session::Column::LastSeenMs, Expr::value(now))
                .col_expr(
                    web_session::Column::ExpiresMs,
                    Expr::value(now + SESSION_IDLE_MS),
                )
                .filter(web_session::Column::IdHash.eq(id))
                .exec(&self.db)
                .await?;
        }
        Ok(Some(Session { user, csrf: s.csrf }))
    }

    pub async fn end_session(&self, token: &str) -> Result<(), AuthError> {
        web_session::Entity::delete_by_id(token_hash(token))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    pub fn conn(&self) -> &DatabaseConnection {
        &self.db
    }
}

// ------------------------------------------------------------------ rate limiting

/// Sign-in attempts are limited per client address and per username, so neither one address
/// trying many names nor many addresses trying one name gets far.
pub struct SignInLimiter {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_user: DefaultKeyedRateLimiter<String>,
}

impl SignInLimiter {
    /// `per_minute` attempts per minute, in bursts of at most that many.
    pub fn new(per_minute: u32) -> Self {
        let n = NonZeroU32::new(std::cmp::max(per_minute, 1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(n).allow_burst(n);
        Self {
            by_ip: RateLimiter::keyed(quota),
            by_user: RateLimiter::keyed(quota),
        }
    }

    /// Whether another attempt is allowed now (consumes one).
    pub fn allow(&self, ip: IpAddr, username: &str) -> bool {
        let ip_ok = self.by_ip.check_key(&ip).is_ok();
        let user_ok = self.by_user.check_key(&username.to_lowercase()).is_ok();
        // Forget idle keys now and then so the maps stay small.
        if self.by_ip.len() > 10_000 {
            self.by_ip.retain_recent();
        }
        if self.by_user.len() > 10_000 {
            self.by_user.retain_recent();
        }
        ip_ok && user_ok
    }
}

// ------------------------------------------------------------------ custodial signing

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The chain refused the transaction (admission) or it failed (receipt): stable code.
    #[error("{code}: {message}")]
    Chain { code: String, message: String },
    #[error("key: {0}")]
    Key(String),
}

/// Signs transactions for signed-in users with their keys from the organisation's keystore
/// (enterprise key custody). Decrypted keys stay in memory for the node's lifetime; one
/// transaction per key is in flight at a time, so nonces never collide.
pub struct Custody {
    keystore: Keystore,
    passphrase: Zeroizing<String>,
    keys: parking_lot::Mutex<HashMap<String, Arc<SigningKey>>>,
    locks: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// How long a web action waits for its transaction to be committed.
const COMMIT_WAIT: Duration = Duration::from_secs(20);

impl Custody {
    pub fn new(keystore: Keystore, passphrase: String) -> Self {
        Self {
            keystore,
            passphrase: Zeroizing::new(passphrase),
            keys: parking_lot::Mutex::new(HashMap::new()),
            locks: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    pub fn keystore(&self) -> &Keystore {
        &self.keystore
    }

    async fn key(&self, label: &str) -> Result<Arc<SigningKey>, CallError> {
        if let Some(k) = self.keys.lock().get(label) {
            return Ok(k.clone());
        }
        let ks = self.keystore.clone();
        let pass = self.passphrase.clone();
        let l = label.to_string();
        let key = tokio::task::spawn_blocking(move || ks.load(&l, &pass))
            .await
            .map_err(|e| CallError::Key(e.to_string()))?
            .map_err(|e| CallError::Key(e.to_string()))?;
        let key = Arc::new(key);
        self.keys.lock().insert(label.to_string(), key.clone());
        Ok(key)
    }

    pub async fn public_key(&self, label: &str) -> Result<PublicKey, CallError> {
        Ok(self.key(label).await?.public_key())
    }

    /// Generate and store a new key under `label`.
    pub async fn create_key(
        &self,
        label: &str,
        alg: chain_core::crypto::SigAlg,
    ) -> Result<PublicKey, CallError> {
        let ks = self.keystore.clone();
        let pass = self.passphrase.clone();
        let l = label.to_string();
        let key = SigningKey::generate(alg);
        let pk = key.public_key();
        let key = tokio::task::spawn_blocking(move || ks.save(&l, &key, &pass).map(|_| key))
            .await
            .map_err(|e| CallError::Key(e.to_string()))?
            .map_err(|e| CallError::Key(e.to_string()))?;
        self.keys.lock().insert(label.to_string(), Arc::new(key));
        Ok(pk)
    }

    /// Sign `contract.method(args)` with the key under `label`, submit it and wait for its
    /// receipt. A failed receipt is an error with the contract's stable code.
    pub async fn call(
        &self,
        node: &Arc<Node>,
        label: &str,
        contract: &str,
        method: &str,
        args: &serde_json::Value,
    ) -> Result<TxOutcome, CallError> {
        let key = self.key(label).await?;
        let lock = self
            .locks
            .lock()
            .entry(label.to_string())
            .or_default()
            .clone();
        let _one_at_a_time = lock.lock().await;
        let account = node
            .account(&key.public_key())
            .await
            .map_err(|e| CallError::Chain {
                code: "internal".into(),
                message: e.to_string(),
            })?;
        let args = serde_json::to_vec(args).map_err(|e| CallError::Key(e.to_string()))?;
        let tx = chain_core::types::build_tx(
            node.info.suite,
            &node.info.chain_id,
            &key,
            account.next_nonce,
            now_ms() + 120_000,
            contract,
            method,
            args,
        );
        match node.submit(tx.bytes(), Some(COMMIT_WAIT)).await {
            Ok(Submitted::Committed(out)) => {
                if out.receipt.code.is_empty() {
                    Ok(out)
                } else {
                    Err(CallError::Chain {
                        code: out.receipt.code.clone(),
                        message: out.receipt.message.clone(),
                    })
                }
            }
            Ok(Submitted::Pending(_)) => Err(CallError::Chain {
                code: "timeout".into(),
                message: "the transaction was accepted but not committed in time".into(),
            }),
            Err(e) => Err(CallError::Chain {
                code: e.code.to_string(),
                message: e.message,
            }),
        }
    }
}

impl Custody {
    /// Sign several calls with the key under `label`, with consecutive nonces, and admit them
    /// in that order without waiting for their commits (bulk work such as an EPCIS capture
    /// split over several transactions). Returns the transaction ids. On an admission error
    /// the calls admitted before it stay admitted; the error says which call failed.
    pub async fn submit_many(
        &self,
        node: &Arc<Node>,
        label: &str,
        calls: Vec<(String, String, Vec<u8>)>,
    ) -> Result<Vec<chain_core::crypto::Digest>, (usize, CallError)> {
        let key = self.key(label).await.map_err(|e| (0, e))?;
        let lock = self
            .locks
            .lock()
            .entry(label.to_string())
            .or_default()
            .clone();
        let _one_at_a_time = lock.lock().await;
        let account = node.account(&key.public_key()).await.map_err(|e| {
            (
                0,
                CallError::Chain {
                    code: "internal".into(),
                    message: e.to_string(),
                },
            )
        })?;
        let mut ids = Vec::with_capacity(calls.len());
        for (i, (contract, method, args)) in calls.into_iter().enumerate() {
            let tx = chain_core::types::build_tx(
                node.info.suite,
                &node.info.chain_id,
                &key,
                account.next_nonce + i as u64,
                now_ms() + 300_000,
                &contract,
                &method,
                args,
            );
            match node.submit(tx.bytes(), None).await {
                Ok(_) => ids.push(tx.id()),
                Err(e) => {
                    return Err((
                        i,
                        CallError::Chain {
                            code: e.code.to_string(),
                            message: e.message,
                        },
                    ));
                }
            }
        }
        Ok(ids)
    }
}

/// Write the database rows of the demo's web users: one per organisation admin whose key is
/// in this node's keystore (`{org}-{name}` labels), each with a random password. Returns
/// (username, password) pairs for the operator; does nothing when users exist.
pub async fn bootstrap_demo_users(
    users: &Users,
    node: &Node,
    keystore: &Keystore,
) -> Result<Vec<(String, String)>, AuthError> {
    if users.count().await? > 0 {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for org in &node.info.genesis.organisations {
        for admin in &org.admins {
            let label = format!("{}-{}", org.id, admin.name);
            if !keystore.exists(&label) {
                continue;
            }
            let password = random_token()[..20].to_string();
            let username = label.clone();
            if users
                .create(
                    &username,
                    &format!("{}/{}", org.id, admin.name),
                    &label,
                    password.clone(),
                )
                .await?
            {
                out.push((username, password));
            }
        }
    }
    Ok(out)
}

/// Used by the session lookup in tests and by the admin pages.
pub async fn user_by_id(
    db: &impl ConnectionTrait,
    id: i64,
) -> Result<Option<web_user::Model>, AuthError> {
    Ok(web_user::Entity::find_by_id(id).one(db).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_in_constant_time_and_reject_empty() {
        let a = random_token();
        assert!(tokens_match(&a, &a.clone()));
        assert!(!tokens_match(&a, &random_token()));
        assert!(!tokens_match("", ""));
        assert!(!tokens_match(&a, &a[..10]));
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery".into())
            .await
            .expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery".into(), h.clone()).await);
        assert!(!verify_password("wrong".into(), h).await);
        assert!(!verify_password("x".into(), "not a phc string".into()).await);
    }

    #[test]
    fn the_limiter_stops_a_burst_per_address_and_per_name() {
        let l = SignInLimiter::new(3);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        assert!((0..3).all(|i| l.allow(ip, &format!("u{i}"))));
        assert!(!l.allow(ip, "u9"), "fourth attempt from one address");
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        let third: IpAddr = "10.0.0.3".parse().expect("ip");
        assert!(l.allow(other, "victim") && l.allow(other, "victim") && l.allow(third, "victim"));
        let fourth: IpAddr = "10.0.0.4".parse().expect("ip");
        assert!(
            !l.allow(fourth, "VICTIM"),
            "fourth attempt on one name, any case"
        );
    }

    #[tokio::test]
    async fn sessions_expire_and_end() {
        let db = sea_orm::Database::connect("sqlite::memory:")
            .await
            .expect("db");
        migrate(&db).await.expect("migrate");
        let users = Users::new(db);
        assert!(
            users
                .create("ada", "acme/ada", "acme-ada", "a long password".into())
                .await
                .expect("create")
        );
        assert!(
            !users
                .create("ada", "acme/x", "acme-x", "a long password".into())
                .await
                .expect("dup")
        );
        assert!(
            users
                .create("bob", "acme/bob", "acme-bob", "short".into())
                .await
                .is_err()
        );
        let u = users
            .authenticate("ada", "a long password".into())
            .await
            .expect("db")
            .expect("ok");
        assert!(
            users
                .authenticate("ada", "nope".into())
                .await
                .expect("db")
                .is_err()
        );
        assert!(
            users
                .authenticate("nobody", "nope".into())
                .await
                .expect("db")
                .is_err()
        );
        let token = users.start_session(u.id).await.expect("session");
        let s = users.session(&token).await.expect("db").expect("valid");
        assert_eq!(s.user.username, "ada");
        assert!(users.session("00").await.expect("db").is_none());
        assert!(users.session(&random_token()).await.expect("db").is_none());
        // Expire it in the database: it is refused and removed.
        web_session::Entity::update_many()
            .col_expr(web_session::Column::ExpiresMs, Expr::value(0i64))
            .exec(users.conn())
            .await
            .expect("update");
        assert!(users.session(&token).await.expect("db").is_none());
        let token = users.start_session(u.id).await.expect("session");
        users.end_session(&token).await.expect("end");
        assert!(users.session(&token).await.expect("db").is_none());
    }
}
