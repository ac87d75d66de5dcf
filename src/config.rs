//! Node configuration: a TOML file (default `<data dir>/trellis.toml`) with environment
//! overrides. Precedence: command-line flag > environment > file > built-in default.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Used when TRELLIS_PASSPHRASE is unset, so the demo starts with one command. Anything that
/// is not a throw-away demo must set its own passphrase.
pub const DEV_PASSPHRASE: &str = "trellis-dev-passphrase";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the database (SQLite), keystore and genesis live.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: SQLite file `<data_dir>/chain.db`.
    pub database_url: Option<String>,
    /// HTTP listen address of the node API (and, later, the web UI).
    pub listen: String,
    /// Keystore label of this node's validator key.
    pub validator_key: String,
    pub max_tx_bytes: usize,
    pub max_block_txs: usize,
    pub mempool_max_txs: usize,
    /// Minimum spacing of blocks (ms).
    pub min_block_interval_ms: u64,
    /// Empty block after this long without transactions (ms); 0 = never.
    pub empty_block_interval_ms: u64,
    /// `solo` (one validator, the embedded default) or `bft` (Malachite, any number of
    /// validators and observers).
    pub consensus: ConsensusKind,
    /// BFT: this node's peer-to-peer listen address (libp2p multiaddr).
    pub p2p_listen: String,
    /// BFT: the other nodes' peer-to-peer addresses.
    pub p2p_peers: Vec<String>,
    /// Base URLs of the other nodes' APIs, to which submitted transactions are relayed.
    pub peer_apis: Vec<String>,
    /// BFT: propose timeout (ms); prevote and precommit use a third of it.
    pub timeout_propose_ms: u64,
    /// Web UI: mark cookies `Secure` and send HSTS. Turn on when browsers reach the node over
    /// HTTPS (directly or through a TLS-terminating proxy).
    pub web_https: bool,
    /// Web UI: sign-in attempts allowed per minute, per client address and per username.
    pub signin_attempts_per_minute: u32,
    /// Base URL printed in QR codes and labels: this node acts as the GS1 Digital Link
    /// resolver. Default: `http://{listen}`.
    pub public_url: Option<String>,
    /// Counterfeit rule: a serialised code scanned by more than this many distinct scanners…
    pub counterfeit_max_scanners: u32,
    /// …within this many hours is flagged (warning on the consumer page, alert for the owner).
    pub counterfeit_window_hours: u64,
    /// Run the IoT gateway inside the node (when its key is in the keystore).
    pub gateway: bool,
    /// Keystore label of the gateway's key (a member with role `iot.gateway`).
    pub gateway_key: String,
    /// `host:port` of the MQTT broker devices publish to; none: an embedded broker.
    pub mqtt_broker: Option<String>,
    /// Where the embedded broker listens (devices connect here).
    pub mqtt_listen: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ConsensusKind {
    Solo,
    Bft,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            database_url: None,
            listen: "127.0.0.1:8080".into(),
            validator_key: "validator".into(),
            max_tx_bytes: 64 * 1024,
            max_block_txs: 10_000,
            mempool_max_txs: 200_000,
            min_block_interval_ms: 20,
            empty_block_interval_ms: 2_000,
            consensus: ConsensusKind::Solo,
            p2p_listen: "/ip4/127.0.0.1/tcp/27000".into(),
            p2p_peers: Vec::new(),
            peer_apis: Vec::new(),
            timeout_propose_ms: 3_000,
            web_https: false,
            signin_attempts_per_minute: 10,
            public_url: None,
            counterfeit_max_scanners: 5,
            counterfeit_window_hours: 24 * 30,
            gateway: true,
            gateway_key: "swiftcold-gateway".into(),
            mqtt_broker: None,
            mqtt_listen: "127.0.0.1:1883".into(),
        }
    }
}

impl Config {
    /// Load `<data_dir>/trellis.toml` (or `explicit`), then apply environment overrides.
    pub fn load(data_dir: Option<&Path>, explicit: Option<&Path>) -> anyhow::Result<Self> {
        let env_dir = std::env::var_os("TRELLIS_DATA_DIR").map(PathBuf::from);
        let dir = data_dir
            .map(Path::to_path_buf)
            .or(env_dir)
            .unwrap_or_else(|| PathBuf::from("data"));
        let file = explicit
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join("trellis.toml"));
        let mut cfg = if file.exists() {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            toml::from_str::<Config>(&text)
                .with_context(|| format!("parsing {}", file.display()))?
        } else if explicit.is_some() {
            anyhow::bail!("config file {} does not exist", file.display());
        } else {
            Config::default()
        };
        if data_dir.is_some() || explicit.is_none() || cfg.data_dir.as_os_str().is_empty() {
            cfg.data_dir = dir;
        }
        if let Ok(v) = std::env::var("DATABASE_URL")
            && !v.is_empty()
        {
            cfg.database_url = Some(v);
        }
        if let Ok(v) = std::env::var("TRELLIS_LISTEN") {
            cfg.listen = v;
        }
        if let Ok(v) = std::env::var("TRELLIS_PUBLIC_URL")
            && !v.is_empty()
        {
            cfg.public_url = Some(v);
        }
        if let Ok(v) = std::env::var("TRELLIS_MQTT_BROKER")
            && !v.is_empty()
        {
            cfg.mqtt_broker = Some(v);
        }
        if let Ok(v) = std::env::var("TRELLIS_GATEWAY") {
            cfg.gateway = !matches!(v.as_str(), "0" | "false" | "no" | "off");
        }
        if let Ok(v) = std::env::var("TRELLIS_GATEWAY") {
            cfg.gateway = !matches!(v.as_str(), "0" | "false" | "no" | "off");
        }
        if let Ok(v) = std::env::var("TRELLIS_MQTT_LISTEN")
            && !v.is_empty()
        {
            cfg.mqtt_listen = v;
        }
        if let Ok(v) = std::env::var("TRELLIS_WEB_HTTPS") {
            cfg.web_https = v == "1" || v.eq_ignore_ascii_case("true");
        }
        Ok(cfg)
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("chain.db").display()
            )
        })
    }

    /// The resolver's base URL (no trailing slash).
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) if !u.is_empty() => u.trim_end_matches('/').to_string(),
            _ => format!("http://{}", self.listen),
        }
    }

    pub fn keystore_dir(&self) -> PathBuf {
        self.data_dir.join("keystore")
    }

    pub fn genesis_path(&self) -> PathBuf {
        self.data_dir.join("genesis.json")
    }
}

/// The keystore passphrase from TRELLIS_PASSPHRASE, or the development default (with a
/// warning).
pub fn passphrase() -> String {
    match std::env::var("TRELLIS_PASSPHRASE") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            tracing::warn!(
                "TRELLIS_PASSPHRASE is not set: using the development passphrase for the keystore. \
                 Set TRELLIS_PASSPHRASE for anything but a local demo."
            );
            DEV_PASSPHRASE.to_string()
        }
    }
}
