//! `trellis`: the single binary that composes the chain node, its API and (later) the apps.

mod bench;
mod bench_bft;
mod bench_iot;
mod bench_trace;
mod bench_web;
mod config;
mod testnet;

/// mimalloc: the node allocates and frees large, short-lived buffers per block (tree batches,
/// rows); glibc's per-thread arenas kept far more of that resident.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chain_core::bft::{BftEngine, BftSettings};
use chain_core::consensus::{ConsensusEngine, SoloConfig, SoloEngine};
use chain_core::crypto::{SigningKey, Suite};
use chain_core::genesis::{self, Genesis};
use chain_core::keystore::{KdfParams, Keystore};
use chain_core::node::{Node, NodeConfig};
use chain_core::proof::{ProofBundle, verify_bundle};
use chain_core::storage::Store;
use clap::{Args, Parser, Subcommand};
use config::{Config, ConsensusKind};

#[derive(Parser)]
#[command(
    name = "trellis",
    version,
    about = "Trellis: industry apps on one shared permissioned chain",
    long_about = "Trellis runs a node of a permissioned (consortium) chain and its apps.\n\n\
Quick start:\n  trellis node                 # creates a demo consortium in ./data on first run and serves http://127.0.0.1:8080\n  \
trellis tx --key acme-admin --contract notary --method anchor --args '{\"key\":\"doc-1\",\"hash\":\"<64 hex>\"}' --wait\n  \
curl http://127.0.0.1:8080/api/v1/txs/<id>/proof > proof.json && trellis verify proof.json\n\n\
Configuration: <data dir>/trellis.toml, overridden by TRELLIS_DATA_DIR, DATABASE_URL, TRELLIS_LISTEN and \
TRELLIS_PASSPHRASE (the keystore passphrase), overridden by flags."
)]
struct Cli {
    /// Data directory (database, keystore, genesis). Default ./data or TRELLIS_DATA_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Config file (default <data dir>/trellis.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a demo consortium: genesis, validator and admin keys (encrypted keystore), config.
    Init(InitArgs),
    /// Run the node: consensus (single validator), API on --listen. Initialises a demo first
    /// if the data directory is empty.
    Node(NodeArgs),
    /// Run the IoT gateway on its own, against a node's API (`--node`): MQTT in, verified and
    /// stored readings out to the chain; while the node is away they wait in the outbox.
    Gateway(GatewayArgs),
    /// Simulated devices: `trellis devices simulate` registers sensors and publishes signed
    /// readings over MQTT (with bad ones on request).
    #[command(subcommand)]
    Devices(DevicesCmd),
    /// Run the node like `node`, and seed the traceability demo (a dairy supply chain) if it is
    /// not on the chain yet; prints the consumer pages to open.
    Demo(NodeArgs),
    /// Generate a key into the keystore and print its public key and DID.
    Keygen(KeygenArgs),
    /// Build, sign and submit a transaction with a keystore key.
    Tx(TxArgs),
    /// Check a proof bundle offline against a trusted validator set (from a genesis file).
    Verify(VerifyArgs),
    /// Verify the stored chain from genesis (links, certificates, roots, state tree).
    VerifyChain,
    /// Benchmark a single-validator node on SQLite; last line `committed_tx_per_s=N p99_commit_ms=M`.
    Bench(bench::BenchArgs),
    /// Create and run a local multi-organisation BFT network (one node process per validator).
    Testnet(testnet::TestnetArgs),
}

#[derive(Args)]
struct InitArgs {
    #[arg(long, default_value = "trellis-demo")]
    chain_id: String,
    /// Crypto suite: ed25519-sha256 (default) or sm2-sm3 (国密).
    #[arg(long, default_value = "ed25519-sha256")]
    suite: Suite,
    /// Replace an existing data directory's genesis and keys.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct NodeArgs {
    /// Listen address (default from config, 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// Crypto suite used if a demo has to be initialised.
    #[arg(long, default_value = "ed25519-sha256")]
    suite: Suite,
    /// On a fresh demo chain, do not seed the traceability demo data.
    #[arg(long)]
    no_demo: bool,
}

#[derive(Subcommand)]
enum DevicesCmd {
    Simulate(SimulateArgs),
}

#[derive(Args)]
struct SimulateArgs {
    /// The node's API (devices are registered through it).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    node: String,
    /// The MQTT broker (`host:port`); default: the configured broker, else `mqtt_listen`.
    #[arg(long)]
    mqtt: Option<String>,
    /// The organisation owning the devices (its `<org>-admin` key registers them).
    #[arg(long, default_value = "swiftcold")]
    org: String,
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Messages per second, all devices together.
    #[arg(long, default_value_t = 10)]
    rate: u64,
    /// Seconds to publish.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Share of bad messages (forged, replayed, unknown device, garbage, clock off).
    #[arg(long, default_value_t = 0.0)]
    bad_ratio: f64,
    /// Bind the devices to a lot, `GTIN/LOT` (their readings feed its cold-chain rule).
    #[arg(long)]
    lot: Option<String>,
}

#[derive(Args)]
struct GatewayArgs {
    /// The node's API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    node: String,
    /// Where the gateway serves its `/metrics` and `/healthz`.
    #[arg(long, default_value = "127.0.0.1:9180")]
    listen: String,
}

#[derive(Args)]
struct KeygenArgs {
    /// Keystore label (lowercase letters, digits, . _ -).
    #[arg(long)]
    label: String,
    #[arg(long, default_value = "ed25519-sha256")]
    suite: Suite,
}

#[derive(Args)]
struct TxArgs {
    /// Keystore label of the signing key.
    #[arg(long)]
    key: String,
    /// Contract, e.g. `notary` or `system` (see GET /api/v1/chain for the list).
    #[arg(long)]
    contract: String,
    /// Method, e.g. `anchor`, `register_member`, `propose`, `vote`.
    #[arg(long)]
    method: String,
    /// Arguments as JSON.
    #[arg(long, default_value = "{}")]
    args: String,
    /// Node URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    node: String,
    /// Nonce (default: the account's next nonce from the node).
    #[arg(long)]
    nonce: Option<u64>,
    /// Seconds until the transaction expires.
    #[arg(long, default_value_t = 300)]
    expires_in: u64,
    /// Wait for the commit and print the receipt.
    #[arg(long)]
    wait: bool,
    /// Only print the signed transaction (hex); do not submit.
    #[arg(long)]
    print_only: bool,
}

#[derive(Args)]
struct VerifyArgs {
    /// Proof bundle (JSON file, or - for stdin).
    bundle: PathBuf,
    /// Genesis file whose validator set you trust (default <data dir>/genesis.json).
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// Trust this validator set instead (hex of its canonical encoding, e.g. the
    /// `validator_set` field of GET /api/v1/chain on a node you trust) — needed for blocks
    /// signed after governance changed the validator set.
    #[arg(long, value_name = "HEX")]
    validator_set: Option<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm=warn,jmt=warn,rumqttd=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = Config::load(cli.data_dir.as_deref(), cli.config.as_deref())?;
    match cli.cmd {
        Cmd::Init(a) => {
            init(&cfg, &a.chain_id, a.suite, a.force)?;
            Ok(())
        }
        Cmd::Node(a) => run_node(cfg, a, false).await,
        Cmd::Demo(a) => run_node(cfg, a, true).await,
        Cmd::Gateway(a) => run_gateway(cfg, a).await,
        Cmd::Devices(DevicesCmd::Simulate(a)) => simulate(cfg, a).await,
        Cmd::Keygen(a) => {
            let ks = Keystore::open(cfg.keystore_dir())?;
            let key = SigningKey::generate(a.suite.sig());
            let pk = ks.save(&a.label, &key, &config::passphrase())?;
            println!(
                "{}",
                serde_json::json!({"label": a.label, "public_key": pk.to_text(), "did": pk.did()})
            );
            Ok(())
        }
        Cmd::Tx(a) => send_tx(&cfg, a).await,
        Cmd::Verify(a) => verify(&cfg, a),
        Cmd::VerifyChain => {
            let node = open_node(&cfg).await?;
            let h = node.verify_stored_chain().await?;
            println!("chain verified from genesis to height {h}");
            Ok(())
        }
        Cmd::Bench(a) => bench::run(a).await,
        Cmd::Testnet(a) => testnet::run(a).await,
    }
}

/// Create the demo consortium in `cfg.data_dir`.
fn init(cfg: &Config, chain_id: &str, suite: Suite, force: bool) -> anyhow::Result<Genesis> {
    let gpath = cfg.genesis_path();
    if gpath.exists() && !force {
        bail!("{} exists; use --force to replace it", gpath.display());
    }
    std::fs::create_dir_all(&cfg.data_dir)?;
    let ks = Keystore::open(cfg.keystore_dir())?.with_kdf(kdf_params());
    let pass = config::passphrase();
    let keys = genesis::demo_keys(suite.sig());
    let g = genesis::demo(chain_id, suite, chain_core::node::now_ms(), &keys);
    g.validate()?;
    let save = |label: &str, key: &SigningKey| -> anyhow::Result<()> {
        if force && ks.exists(label) {
            std::fs::remove_file(cfg.keystore_dir().join(format!("{label}.json")))?;
        }
        ks.save(label, key, &pass)?;
        Ok(())
    };
    save(&cfg.validator_key, &keys.validator.1)?;
    for (org, name, key) in &keys.admins {
        save(&format!("{org}-{name}"), key)?;
    }
    if let Some(k) = &keys.gateway {
        save(&cfg.gateway_key, k)?;
    }
    std::fs::write(&gpath, serde_json::to_vec_pretty(&g)?)?;
    let cfg_path = cfg.data_dir.join("trellis.toml");
    if !cfg_path.exists() || force {
        let mut file_cfg = cfg.clone();
        file_cfg.data_dir = PathBuf::new();
        std::fs::write(&cfg_path, toml::to_string_pretty(&file_cfg)?)?;
    }
    eprintln!(
        "initialised chain `{chain_id}` ({suite}) in {}: genesis.json, keystore/ ({} keys), trellis.toml",
        cfg.data_dir.display(),
        keys.admins.len() + 1 + usize::from(keys.gateway.is_some())
    );
    Ok(g)
}

/// Argon2id costs for keystore files; TRELLIS_FAST_KDF=1 (tests only) selects cheap ones.
fn kdf_params() -> KdfParams {
    if std::env::var("TRELLIS_FAST_KDF").is_ok_and(|v| v == "1") {
        KdfParams::insecure_fast()
    } else {
        KdfParams::default()
    }
}

fn read_genesis(path: &Path) -> anyhow::Result<Genesis> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

fn node_config(cfg: &Config) -> NodeConfig {
    let mut nc = NodeConfig {
        max_tx_bytes: cfg.max_tx_bytes,
        max_block_txs: cfg.max_block_txs,
        ..NodeConfig::default()
    };
    nc.mempool.max_txs = cfg.mempool_max_txs;
    nc
}

async fn open_node(cfg: &Config) -> anyhow::Result<Arc<Node>> {
    let g = read_genesis(&cfg.genesis_path())?;
    let url = cfg.database_url();
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening database {}", redact(&url)))?;
    Ok(Node::open(store, g, registry(), node_config(cfg)).await?)
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

/// All contracts this binary carries: the core ones and, as they arrive, the apps'.
fn registry() -> chain_core::contract::ContractRegistry {
    let mut r = chain_core::core_contracts();
    r.register(Arc::new(traceability::contract::TraceContract));
    r.register(Arc::new(iot_gateway::contract::IotContract));
    r
}

async fn run_node(mut cfg: Config, a: NodeArgs, demo: bool) -> anyhow::Result<()> {
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    // A chain created here is the demo consortium: it gets the demo data unless asked not to.
    let mut seed_demo = demo;
    if !cfg.genesis_path().exists() {
        init(&cfg, "trellis-demo", a.suite, false)?;
        seed_demo |= !a.no_demo;
    }
    let node = open_node(&cfg).await?;
    let ks = Keystore::open(cfg.keystore_dir())?;
    let key = ks
        .load(&cfg.validator_key, &config::passphrase())
        .with_context(|| {
            format!(
                "loading validator key `{}` from the keystore",
                cfg.validator_key
            )
        })?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let engine_task = match cfg.consensus {
        ConsensusKind::Solo => {
            let engine = SoloEngine::new(
                key,
                SoloConfig {
                    min_block_interval: Duration::from_millis(cfg.min_block_interval_ms),
                    empty_block_interval: (cfg.empty_block_interval_ms > 0)
                        .then(|| Duration::from_millis(cfg.empty_block_interval_ms)),
                },
            );
            tokio::spawn(engine.run(node.clone(), stop_rx.clone()))
        }
        ConsensusKind::Bft => {
            let engine = BftEngine::new(key, bft_settings(&cfg, &node)?);
            tokio::spawn(engine.run(node.clone(), stop_rx.clone()))
        }
    };
    tokio::spawn(chain_core::relay::run(
        node.clone(),
        cfg.peer_apis.clone(),
        stop_rx.clone(),
    ));
    let (app, web, _) = build_web(&cfg, node.clone(), stop_rx.clone(), seed_demo).await?;
    let app = app.layer(tower_http::trace::TraceLayer::new_for_http());
    if cfg.gateway {
        match start_gateway(&cfg, &node, stop_rx.clone()).await {
            Ok(gw) => {
                let _ = web.devices_seen.set(Arc::new(GatewaySeen(gw)));
                tokio::spawn(demo_live_sensor(cfg.clone(), node.clone(), stop_rx.clone()));
            }
            Err(e) => tracing::warn!("IoT gateway not started: {e}"),
        }
    }
    tracing::info!(
        chain = %node.info.chain_id,
        height = node.tip().height,
        "node listening on http://{addr} (API under /api/v1)"
    );
    println!("listening on http://{addr}");
    let mut stop_http = stop_rx.clone();
    let server = axum::serve(
        listener,
        // Client addresses feed the sign-in rate limiter.
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop_http.changed().await;
    });
    let server_task = tokio::spawn(async move { server.await });
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), engine_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), server_task).await;
    Ok(())
}

/// The node API, the web UI and its security headers on one router. Creates the demo's web
/// users on a fresh database and writes their one-time passwords to `<data>/web-users.txt`.
pub async fn web_app(
    cfg: &Config,
    node: Arc<Node>,
    stop: tokio::sync::watch::Receiver<bool>,
    seed_demo: bool,
) -> anyhow::Result<axum::Router> {
    Ok(build_web(cfg, node, stop, seed_demo).await?.0)
}

/// [`web_app`], also returning the web state (custodial signing, users) and the traceability
/// app, for the benchmarks that drive them directly.
pub async fn build_web(
    cfg: &Config,
    node: Arc<Node>,
    stop: tokio::sync::watch::Receiver<bool>,
    seed_demo: bool,
) -> anyhow::Result<(
    axum::Router,
    frontend::web::Shared,
    traceability::app::TraceShared,
)> {
    use frontend::auth::{Custody, SignInLimiter, Users, bootstrap_demo_users};
    let db = node.store.conn().clone();
    frontend::auth::migrate(&db)
        .await
        .context("creating the web tables")?;
    let users = Users::new(db);
    let keystore = Keystore::open(cfg.keystore_dir())?.with_kdf(kdf_params());
    let created = bootstrap_demo_users(&users, &node, &keystore).await?;
    if !created.is_empty() {
        let path = cfg.data_dir.join("web-users.txt");
        let mut text = String::from(
            "# Web sign-in for the demo organisations' admins (created once; change them).\n",
        );
        for (user, password) in &created {
            text.push_str(&format!("{user} {password}\n"));
        }
        write_private(&path, &text)?;
        tracing::warn!(
            "created {} demo web users; their passwords are in {}",
            created.len(),
            path.display()
        );
    }
    let state = Arc::new(frontend::web::WebState {
        node: node.clone(),
        users,
        custody: Custody::new(keystore, config::passphrase()),
        limiter: SignInLimiter::new(cfg.signin_attempts_per_minute),
        nav: Arc::new(frontend::web::default_nav()),
        secure_cookies: cfg.web_https,
        devices_seen: std::sync::OnceLock::new(),
    });
    let trace = trace_app(cfg, &node, stop).await?;
    if seed_demo {
        let state = state.clone();
        let base = cfg.public_url();
        tokio::spawn(async move {
            match traceability::demo::seed(&state.node, &state.custody, &base).await {
                Ok(links) => println!(
                    "demo data ready; consumer pages:\n  in good standing: {}\n  cold-chain excursion: {}\n  recalled: {}",
                    links.ok, links.excursion, links.recalled
                ),
                Err(e) => tracing::error!("seeding the demo data failed: {e}"),
            }
        });
    }
    let mut app = chain_core::api::router(node)
        .merge(frontend::web::router(
            state.clone(),
            traceability::routes(trace.clone()),
        ))
        .layer(axum::middleware::from_fn(frontend::web::security_headers));
    if cfg.web_https {
        app = app.layer(axum::middleware::from_fn(frontend::web::hsts));
    }
    Ok((app, state, trace))
}

/// The traceability app: its read model (in the node's database), the indexer that keeps it in
/// step with the chain, and the EPCIS schema validator when the official schemas are found.
async fn trace_app(
    cfg: &Config,
    node: &Arc<Node>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<traceability::app::TraceShared> {
    use traceability::epcis::validate::EpcisValidator;
    let db = node.store.conn().clone();
    let indexed = traceability::indexer::start(node.clone(), db.clone(), stop)
        .await
        .context("starting the traceability indexer")?;
    let validator = match EpcisValidator::discover() {
        Some(dir) => Some(Arc::new(EpcisValidator::load(&dir).with_context(|| {
            format!("loading the EPCIS 2.0 schemas from {}", dir.display())
        })?)),
        None => {
            tracing::warn!(
                "EPCIS 2.0 JSON schemas not found (set TRELLIS_EPCIS_SCHEMA_DIR): \
                 /epcis/capture checks events without the official schema"
            );
            None
        }
    };
    let scan_rule = traceability::app::ScanRule {
        max_scanners: cfg.counterfeit_max_scanners,
        window_ms: cfg.counterfeit_window_hours.saturating_mul(3_600_000),
    };
    let scans = traceability::scans::ScanBook::start(db.clone(), scan_rule, scan_salt(cfg)?);
    Ok(Arc::new(traceability::app::TraceApp {
        node: node.clone(),
        db,
        indexed,
        validator,
        scan_rule,
        scans,
        max_capture_events: 100_000,
        max_tx_bytes: cfg.max_tx_bytes,
        public_url: cfg.public_url(),
    }))
}

/// The gateway's pipeline over its durable store `<data>/gateway.db` and inbox
/// `<data>/gateway.inbox.db`, with MQTT ingestion and the anchoring loop running until `stop`.
async fn spawn_gateway(
    cfg: &Config,
    chain: Arc<dyn iot_gateway::gateway::Chain>,
    suite: Suite,
    client_id: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(Arc<iot_gateway::gateway::Gateway>, String, u16)> {
    use iot_gateway::gateway::{Gateway, GatewayConfig};
    let (host, port) = mqtt_endpoint(cfg).await?;
    std::fs::create_dir_all(&cfg.data_dir)?;
    let store_path = cfg.data_dir.join("gateway.db");
    let db = iot_gateway::store::open(&store_path)
        .await
        .context("opening the gateway's store")?;
    let writer = iot_gateway::store::open_writer(&store_path)
        .await
        .context("opening the gateway's store")?;
    let gw = Arc::new(
        Gateway::open(
            db,
            chain,
            suite.sig(),
            suite.hash(),
            GatewayConfig {
                id: format!("gw-{}", cfg.gateway_key),
                ..GatewayConfig::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!(e))?
        .with_writer(writer),
    );
    let inbox = iot_gateway::inbox::Inbox::open(&cfg.data_dir.join("gateway.inbox.db"))
        .await
        .context("opening the gateway's inbox")?;
    tokio::spawn(iot_gateway::mqtt::run_subscriber(
        gw.clone(),
        Arc::new(inbox),
        host.clone(),
        port,
        client_id,
        stop.clone(),
    ));
    tokio::spawn(iot_gateway::mqtt::run_anchoring(
        gw.clone(),
        Duration::from_millis(200),
        stop,
    ));
    Ok((gw, host, port))
}

/// The device page's view of the gateway running in this process.
struct GatewaySeen(Arc<iot_gateway::gateway::Gateway>);

impl frontend::web::DeviceTelemetry for GatewaySeen {
    fn devices_seen(&self) -> std::collections::BTreeMap<String, frontend::web::DeviceSeen> {
        self.0
            .activity()
            .into_iter()
            .map(|(device, a)| {
                let seen = frontend::web::DeviceSeen {
                    accepted: a.accepted,
                    last_accepted_ms: a.last_accepted_ms,
                    rejected: a
                        .rejected
                        .into_iter()
                        .map(|(code, n)| (code.to_string(), n))
                        .collect(),
                };
                (device, seen)
            })
            .collect()
    }
}

/// The IoT gateway inside the node: MQTT (the configured broker, else an embedded one), the
/// durable store, anchoring with the gateway's key, the device registry followed from the
/// chain; its metrics join the node's `/metrics`.
async fn start_gateway(
    cfg: &Config,
    node: &Arc<Node>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Arc<iot_gateway::gateway::Gateway>> {
    let ks = Keystore::open(cfg.keystore_dir())?;
    if !ks.exists(&cfg.gateway_key) {
        anyhow::bail!(
            "no key `{}` in the keystore (a member with role iot.gateway)",
            cfg.gateway_key
        );
    }
    let key = ks.load(&cfg.gateway_key, &config::passphrase())?;
    let chain = Arc::new(iot_gateway::gateway::NodeChain::new(node.clone(), key));
    let (gw, host, port) = spawn_gateway(
        cfg,
        chain,
        node.info.suite,
        format!("trellis-gateway-{}", node.info.chain_id),
        stop.clone(),
    )
    .await?;
    node.metrics.attach(gw.metrics().registry());
    // Registrations, bindings and revocations take effect as their blocks commit.
    let mut blocks = node.subscribe();
    let mut stop_refresh = stop;
    let refresh = gw.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                b = blocks.recv() => {
                    let changed = match &b {
                        Ok(b) => b.events.iter().any(|(_, e)| e.contract == iot_gateway::contract::NAME && e.kind.starts_with("device_")),
                        // Missed blocks: reload to be safe.
                        Err(_) => true,
                    };
                    if changed && let Err(e) = refresh.refresh_devices().await {
                        tracing::warn!("reloading devices: {e}");
                    }
                }
                _ = stop_refresh.changed() => return,
            }
        }
    });
    tracing::info!("IoT gateway: MQTT on {host}:{port}");
    println!(
        "IoT gateway: devices publish to mqtt://{host}:{port} (trellis/{{org}}/devices/{{did}}/readings)"
    );
    Ok(gw)
}

/// On a chain holding the demo data, a live sensor on the yoghurt lot in the cold store keeps
/// publishing through the gateway, so the lot's cold-chain chart grows while one watches.
async fn demo_live_sensor(cfg: Config, node: Arc<Node>, stop: tokio::sync::watch::Receiver<bool>) {
    use traceability::demo::YOGHURT;
    // The demo data may still be being seeded.
    let mut present = false;
    for _ in 0..120 {
        let lot = traceability::domain::lot_key(YOGHURT, "YOG-2611B");
        if let Ok(Some(_)) = node.state_json::<serde_json::Value>("trace", &lot).await {
            present = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if !present {
        return;
    }
    let run = async {
        let admin = Keystore::open(cfg.keystore_dir())
            .map_err(|e| e.to_string())?
            .load("swiftcold-admin", &config::passphrase())
            .map_err(|e| e.to_string())?;
        let mqtt = mqtt_address(&cfg).map_err(|e| e.to_string())?;
        let chain = iot_gateway::gateway::NodeChain::new(node.clone(), admin);
        iot_gateway::sim::run_demo_sensor(
            &chain,
            node.info.suite.sig(),
            "swiftcold",
            iot_gateway::contract::Binding::Lot {
                gtin: YOGHURT.into(),
                lot: "YOG-2611B".into(),
            },
            mqtt,
            Duration::from_secs(5),
            stop,
        )
        .await
    };
    if let Err(e) = run.await {
        tracing::warn!("demo live sensor not running: {e}");
    }
}

/// `trellis gateway`: the gateway alone, talking to a node over HTTP, serving its own
/// `/metrics` and `/healthz`.
async fn run_gateway(cfg: Config, a: GatewayArgs) -> anyhow::Result<()> {
    let ks = Keystore::open(cfg.keystore_dir())?;
    let key = ks
        .load(&cfg.gateway_key, &config::passphrase())
        .with_context(|| format!("loading the gateway key `{}`", cfg.gateway_key))?;
    let chain = Arc::new(iot_gateway::gateway::HttpChain::new(&a.node, key));
    // The suite comes from the node; until it answers, assume the default one.
    let suite = node_suite(&a.node).await.unwrap_or(Suite::Ed25519Sha256);
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (gw, host, port) = spawn_gateway(
        &cfg,
        chain,
        suite,
        format!("trellis-gateway-{}", cfg.gateway_key),
        stop.clone(),
    )
    .await?;
    let refresh = gw.clone();
    let mut stop_refresh = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {
                    if let Err(e) = refresh.refresh_devices().await {
                        tracing::warn!("reloading devices: {e}");
                    }
                }
                _ = stop_refresh.changed() => return,
            }
        }
    });
    let metrics = gw.metrics().clone();
    let health = gw.metrics().clone();
    let app =
        axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let m = metrics.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            m.render(),
                        )
                    }
                }),
            )
            .route(
                "/healthz",
                axum::routing::get(move || {
                    let m = health.clone();
                    async move {
                        axum::Json(serde_json::json!({"status": "ok", "outbox": m.outbox.get()}))
                    }
                }),
            );
    let addr = listener.local_addr()?;
    let mut stop_http = stop;
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_http.changed().await;
            })
            .await
    });
    println!(
        "IoT gateway: devices publish to mqtt://{host}:{port}; anchoring on {}; metrics on http://{addr}/metrics",
        a.node
    );
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}

/// `trellis devices simulate`.
async fn simulate(cfg: Config, a: SimulateArgs) -> anyhow::Result<()> {
    use iot_gateway::sim::{SimConfig, publish, register};
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.bad_ratio),
        "--bad-ratio is a share between 0 and 1"
    );
    let suite = node_suite(&a.node)
        .await
        .with_context(|| format!("the node at {} does not answer", a.node))?;
    let (host, port) = match a.mqtt.as_ref().or(cfg.mqtt_broker.as_ref()) {
        Some(b) => {
            let (h, p) = b
                .rsplit_once(':')
                .with_context(|| format!("`{b}` is not host:port"))?;
            (h.to_string(), p.parse::<u16>().context("MQTT port")?)
        }
        None => {
            let addr: std::net::SocketAddr = cfg.mqtt_listen.parse().context("mqtt_listen")?;
            (addr.ip().to_string(), addr.port())
        }
    };
    let binding = match &a.lot {
        Some(l) => {
            let (gtin, lot) = l.split_once('/').context("--lot is GTIN/LOT")?;
            Some(iot_gateway::contract::Binding::Lot {
                gtin: gtin.to_string(),
                lot: lot.to_string(),
            })
        }
        None => None,
    };
    let sim = SimConfig {
        org: a.org.clone(),
        devices: a.devices.max(1),
        rate: a.rate.max(1),
        duration: Duration::from_secs(a.duration),
        bad_ratio: a.bad_ratio,
        binding,
        mqtt_host: host,
        mqtt_port: port,
        alg: suite.sig(),
    };
    let admin = Keystore::open(cfg.keystore_dir())?
        .load(&format!("{}-admin", a.org), &config::passphrase())
        .with_context(|| format!("loading the key `{}-admin`", a.org))?;
    let chain = iot_gateway::gateway::HttpChain::new(&a.node, admin);
    let registered = register(&chain, &sim)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    eprintln!(
        "simulate: {registered} devices registered, {} in all; publishing {} msg/s for {} s",
        sim.devices, sim.rate, a.duration
    );
    let report = publish(&sim).await.map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "published={} bad={} devices={}",
        report.published, report.bad, sim.devices
    );
    Ok(())
}

/// The suite of the chain behind a node's API, if it answers.
async fn node_suite(node: &str) -> Option<Suite> {
    let r = reqwest::get(format!("{}/api/v1/chain", node.trim_end_matches('/')))
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    serde_json::from_value(v["suite"].clone()).ok()
}

/// The broker's address: the configured one, else the embedded broker's `mqtt_listen`.
fn mqtt_address(cfg: &Config) -> anyhow::Result<(String, u16)> {
    match &cfg.mqtt_broker {
        Some(b) => {
            let (h, p) = b
                .rsplit_once(':')
                .with_context(|| format!("mqtt_broker `{b}` is not host:port"))?;
            Ok((h.to_string(), p.parse::<u16>().context("mqtt_broker port")?))
        }
        None => {
            let addr: std::net::SocketAddr = cfg
                .mqtt_listen
                .parse()
                .with_context(|| format!("mqtt_listen `{}`", cfg.mqtt_listen))?;
            Ok((addr.ip().to_string(), addr.port()))
        }
    }
}

/// The broker devices publish to: the configured one, else an embedded one on `mqtt_listen`.
async fn mqtt_endpoint(cfg: &Config) -> anyhow::Result<(String, u16)> {
    let (host, port) = mqtt_address(cfg)?;
    match &cfg.mqtt_broker {
        Some(_) => Ok((host, port)),
        None => {
            let addr: std::net::SocketAddr = cfg
                .mqtt_listen
                .parse()
                .with_context(|| format!("mqtt_listen `{}`", cfg.mqtt_listen))?;
            // The embedded broker cannot report a failed bind: check the port first.
            std::net::TcpListener::bind(addr).with_context(|| {
                format!(
                    "{addr} is in use: point mqtt_broker at the broker there, or set mqtt_listen"
                )
            })?;
            iot_gateway::mqtt::start_embedded_broker(addr)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            Ok((addr.ip().to_string(), addr.port()))
        }
    }
}

/// The salt of scanner fingerprints: random once per data directory, so counts survive
/// restarts but fingerprints mean nothing elsewhere.
fn scan_salt(cfg: &Config) -> anyhow::Result<[u8; 16]> {
    let path = cfg.data_dir.join("scan-salt");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(bytes) = hex::decode(text.trim())
        && let Ok(salt) = <[u8; 16]>::try_from(bytes.as_slice())
    {
        return Ok(salt);
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("random salt: {e}"))?;
    write_private(&path, &hex::encode(salt))?;
    Ok(salt)
}

/// Write a file only its owner can read (it holds passwords).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Settings of the BFT engine from the node config. The network identity is derived from the
/// node's key, so it survives restarts without another key file.
fn bft_settings(cfg: &Config, node: &Node) -> anyhow::Result<BftSettings> {
    let ks = Keystore::open(cfg.keystore_dir())?;
    let key = ks.load(&cfg.validator_key, &config::passphrase())?;
    let secret = key.secret_bytes();
    let seed = chain_core::crypto::HashAlg::Sha256
        .digest_parts(&[b"trellis/p2p-identity/v1\0", secret.as_slice()])
        .bytes;
    let mut s = BftSettings::new(
        cfg.data_dir.join("consensus"),
        cfg.p2p_listen.clone(),
        cfg.p2p_peers.clone(),
        seed,
    );
    s.moniker = format!("{}-{}", node.info.chain_id, cfg.validator_key);
    s.min_block_interval = Duration::from_millis(cfg.min_block_interval_ms.max(1));
    if cfg.empty_block_interval_ms > 0 {
        s.empty_block_interval = Duration::from_millis(cfg.empty_block_interval_ms);
    }
    s.timeout_propose = Duration::from_millis(cfg.timeout_propose_ms.max(100));
    s.timeout_vote = s.timeout_propose / 3;
    Ok(s)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn send_tx(cfg: &Config, a: TxArgs) -> anyhow::Result<()> {
    let ks = Keystore::open(cfg.keystore_dir())?;
    let key = ks.load(&a.key, &config::passphrase())?;
    let args: serde_json::Value = serde_json::from_str(&a.args).context("--args must be JSON")?;
    let client = reqwest::Client::new();
    let base = a.node.trim_end_matches('/');
    let chain: serde_json::Value = client
        .get(format!("{base}/api/v1/chain"))
        .send()
        .await
        .context("contacting the node")?
        .json()
        .await?;
    let chain_id = chain["chain_id"]
        .as_str()
        .context("node did not report a chain id")?;
    let suite: Suite = chain["suite"]
        .as_str()
        .unwrap_or("ed25519-sha256")
        .parse()?;
    let nonce = match a.nonce {
        Some(n) => n,
        None => {
            let acc: serde_json::Value = client
                .get(format!("{base}/api/v1/accounts/{}", key.public_key()))
                .send()
                .await?
                .json()
                .await?;
            acc["next_nonce"].as_u64().unwrap_or(0)
        }
    };
    let tx = chain_core::types::build_tx(
        suite,
        chain_id,
        &key,
        nonce,
        chain_core::node::now_ms() + a.expires_in * 1000,
        &a.contract,
        &a.method,
        serde_json::to_vec(&args)?,
    );
    if a.print_only {
        println!("{}", hex::encode(tx.bytes()));
        return Ok(());
    }
    let body = serde_json::json!({"tx": hex::encode(tx.bytes()), "wait": if a.wait { "commit" } else { "admission" }});
    let resp = client
        .post(format!("{base}/api/v1/txs"))
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    if !status.is_success() {
        bail!("the node rejected the transaction ({status})");
    }
    if v["receipt"]["status"] == "failed" {
        bail!(
            "the transaction was committed but failed: {}",
            v["receipt"]["code"]
        );
    }
    Ok(())
}

fn verify(cfg: &Config, a: VerifyArgs) -> anyhow::Result<()> {
    let text = if a.bundle.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        s
    } else {
        std::fs::read_to_string(&a.bundle)
            .with_context(|| format!("reading {}", a.bundle.display()))?
    };
    let bundle: ProofBundle = serde_json::from_str(&text).context("not a proof bundle")?;
    let set = match &a.validator_set {
        Some(h) => {
            let bytes = hex::decode(h.trim()).context("--validator-set must be hex")?;
            chain_core::types::ValidatorSet::decode(&bytes)
                .map_err(|e| anyhow::anyhow!("--validator-set: {e}"))?
        }
        None => {
            let gpath = a.genesis.unwrap_or_else(|| cfg.genesis_path());
            let g = read_genesis(&gpath)?;
            if g.chain_id != bundle.chain_id {
                bail!(
                    "the bundle is for chain `{}`, the genesis for `{}`",
                    bundle.chain_id,
                    g.chain_id
                );
            }
            g.validator_set()?
        }
    };
    match verify_bundle(&bundle, &set) {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            println!("proof verified");
            Ok(())
        }
        Err(e) => bail!("proof rejected: {e}"),
    }
}
