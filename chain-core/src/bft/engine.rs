//! The multi-validator engine: Malachite (Tendermint-family BFT) decides block ids, the node
//! proposes, validates, commits and serves blocks. Blocks travel as proposal-part streams;
//! lagging nodes catch up through Malachite's value sync, which asks peers for decided blocks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use malachitebft_app_channel::app::config::{
    ConsensusConfig, P2pConfig, TimeoutConfig, ValuePayload, ValueSyncConfig,
};
use malachitebft_app_channel::app::engine::host::Next;
use malachitebft_app_channel::app::events::{RxEvent, TxEvent};
use malachitebft_app_channel::app::node::{EngineHandle, NodeConfig, NodeHandle};
use malachitebft_app_channel::app::streaming::StreamContent;
use malachitebft_app_channel::app::types::core::{
    CommitCertificate as MalCert, CommitSignature, Round, Validity,
};
use malachitebft_app_channel::app::types::streaming::{StreamId, StreamMessage};
use malachitebft_app_channel::app::types::sync::RawDecidedValue;
use malachitebft_app_channel::app::types::{Keypair, LocallyProposedValue, PeerId, ProposedValue};
use malachitebft_app_channel::{AppMsg, NetworkMsg, start_engine};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::codec::MalCodec;
use super::context::{
    Address, BlockId, Ctx, Height, ProposalPart, Sig, Signer, ValidatorSet as MalSet,
    proposal_sign_bytes, proposer_index,
};
use crate::codec::{Reader, Writer};
use crate::consensus::ConsensusEngine;
use crate::crypto::{HashAlg, PublicKey, SigningKey};
use crate::node::{Node, NodeError, now_ms};
use crate::types::{BlockHeader, CommitCertificate, CommitSig, SignedTx, ValidatorSet};

/// Largest chunk of a block in one proposal part (Malachite's gossip limit is 4 MiB).
const PART_BYTES: usize = 512 * 1024;
/// Streams of proposal parts kept while incomplete.
const MAX_STREAMS: usize = 64;

#[derive(Debug, Clone)]
pub struct BftSettings {
    /// Directory for the consensus write-ahead log and undecided blocks.
    pub home: PathBuf,
    pub moniker: String,
    /// libp2p listen address, e.g. `/ip4/0.0.0.0/tcp/27000`.
    pub listen: String,
    /// Peers' libp2p addresses.
    pub peers: Vec<String>,
    /// Seed of this node's network identity (not its validator key: libp2p has no SM2).
    pub p2p_seed: [u8; 32],
    /// Minimum spacing between blocks, so transactions arriving together share a block.
    pub min_block_interval: Duration,
    /// An empty block is proposed after this long without transactions.
    pub empty_block_interval: Duration,
    pub timeout_propose: Duration,
    pub timeout_vote: Duration,
}

impl BftSettings {
    pub fn new(home: PathBuf, listen: String, peers: Vec<String>, p2p_seed: [u8; 32]) -> Self {
        Self {
            home,
            moniker: "trellis".into(),
            listen,
            peers,
            p2p_seed,
            min_block_interval: Duration::from_millis(50),
            empty_block_interval: Duration::from_secs(2),
            timeout_propose: Duration::from_secs(3),
            timeout_vote: Duration::from_secs(1),
        }
    }
}

// ------------------------------------------------------------------------------- Malachite node

#[derive(Clone, Serialize, Deserialize)]
struct MalConfig {
    moniker: String,
    consensus: ConsensusConfig,
    value_sync: ValueSyncConfig,
}

impl NodeConfig for MalConfig {
    fn moniker(&self) -> &str {
        &self.moniker
    }
    fn consensus(&self) -> &ConsensusConfig {
        &self.consensus
    }
    fn value_sync(&self) -> &ValueSyncConfig {
        &self.value_sync
    }
}

#[derive(Clone)]
struct MalNode {
    home: PathBuf,
    config: MalConfig,
    key: Arc<SigningKey>,
    p2p_seed: [u8; 32],
    chain_id: Arc<str>,
}

struct MalHandle {
    tx_event: TxEvent<Ctx>,
}

#[async_trait::async_trait]
impl NodeHandle<Ctx> for MalHandle {
    fn subscribe(&self) -> RxEvent<Ctx> {
        self.tx_event.subscribe()
    }
    async fn kill(&self, _reason: Option<String>) -> eyre::Result<()> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl malachitebft_app_channel::app::node::Node for MalNode {
    type Context = Ctx;
    type Config = MalConfig;
    type Genesis = ();
    type PrivateKeyFile = ();
    type SigningProvider = Signer;
    type NodeHandle = MalHandle;

    async fn start(&self) -> eyre::Result<MalHandle> {
        eyre::bail!("the Trellis node starts the engine itself")
    }
    async fn run(self) -> eyre::Result<()> {
        eyre::bail!("the Trellis node runs the engine itself")
    }
    fn get_home_dir(&self) -> PathBuf {
        self.home.clone()
    }
    fn load_config(&self) -> eyre::Result<MalConfig> {
        Ok(self.config.clone())
    }
    fn get_address(&self, pk: &PublicKey) -> Address {
        Address(pk.clone())
    }
    fn get_public_key(&self, sk: &Arc<SigningKey>) -> PublicKey {
        sk.public_key()
    }
    fn get_keypair(&self, _sk: Arc<SigningKey>) -> Keypair {
        // A 32-byte seed is always a valid Ed25519 secret; the fallback cannot be reached.
        let mut seed = self.p2p_seed;
        Keypair::ed25519_from_bytes(&mut seed).unwrap_or_else(|_| Keypair::generate_ed25519())
    }
    fn load_private_key(&self, _file: ()) -> Arc<SigningKey> {
        self.key.clone()
    }
    fn load_private_key_file(&self) -> eyre::Result<()> {
        Ok(())
    }
    fn load_genesis(&self) -> eyre::Result<()> {
        Ok(())
    }
    fn get_signing_provider(&self, key: Arc<SigningKey>) -> Signer {
        Signer {
            key,
            chain_id: self.chain_id.clone(),
        }
    }
}

fn mal_config(s: &BftSettings) -> Result<MalConfig, NodeError> {
    let bad = |what: &str, e: String| NodeError::Invalid(format!("{what}: {e}"));
    let listen_addr = s
        .listen
        .parse()
        .map_err(|e: multiaddr::Error| bad("p2p listen address", e.to_string()))?;
    let persistent_peers = s
        .peers
        .iter()
        .map(|p| {
            p.parse()
                .map_err(|e: multiaddr::Error| bad("peer address", e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let timeouts = TimeoutConfig {
        timeout_propose: s.timeout_propose,
        timeout_prevote: s.timeout_vote,
        timeout_precommit: s.timeout_vote,
        ..TimeoutConfig::default()
    };
    Ok(MalConfig {
        moniker: s.moniker.clone(),
        consensus: ConsensusConfig {
            timeouts,
            p2p: P2pConfig {
                listen_addr,
                persistent_peers,
                ..P2pConfig::default()
            },
            value_payload: ValuePayload::PartsOnly,
            queue_capacity: 0,
        },
        value_sync: ValueSyncConfig {
            status_update_interval: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            ..ValueSyncConfig::default()
        },
    })
}

// ------------------------------------------------------------------------------- block bytes

/// A proposed block on the wire: header and transactions (the commit comes with the decision).
pub fn encode_block(header: &BlockHeader, txs: &[SignedTx]) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(&header.encode());
    w.list(txs, |w, t| {
        w.bytes(t.bytes());
    });
    w.finish()
}

pub fn decode_block(
    data: &[u8],
    hash: HashAlg,
    max_txs: usize,
) -> Result<(BlockHeader, Vec<SignedTx>), String> {
    let mut r = Reader::new(data);
    let header = BlockHeader::decode(r.bytes("header").map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let raws = r
        .list("txs", max_txs, |r| r.bytes("tx").map(|b| b.to_vec()))
        .map_err(|e| e.to_string())?;
    r.finish().map_err(|e| e.to_string())?;
    let txs = raws
        .iter()
        .map(|b| SignedTx::decode(b, hash).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    if txs.len() != header.tx_count as usize {
        return Err("transaction count does not match the header".into());
    }
    Ok((header, txs))
}

// ------------------------------------------------------------------------------- engine

pub struct BftEngine {
    key: Arc<SigningKey>,
    settings: BftSettings,
}

impl BftEngine {
    pub fn new(key: SigningKey, settings: BftSettings) -> Self {
        Self {
            key: Arc::new(key),
            settings,
        }
    }
}

impl ConsensusEngine for BftEngine {
    async fn run(
        self,
        node: Arc<Node>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), NodeError> {
        let ctx = Ctx::new(&node.info.chain_id);
        let config = mal_config(&self.settings)?;
        for dir in ["undecided", "decided"] {
            std::fs::create_dir_all(self.settings.home.join(dir))
                .map_err(|e| NodeError::Internal(format!("consensus directory: {e}")))?;
        }
        let mal_node = MalNode {
            home: self.settings.home.clone(),
            config: config.clone(),
            key: self.key.clone(),
            p2p_seed: self.settings.p2p_seed,
            chain_id: ctx.chain_id.clone(),
        };
        let mut app = App::new(
            ctx.clone(),
            node.clone(),
            self.key.clone(),
            self.settings.clone(),
        );
        app.load_undecided();
        app.replay_decided().await?;
        // Without peer discovery, libp2p does not redial a peer whose connection broke (a
        // network partition). A node that sees no progress for this long restarts its engine,
        // which dials every configured peer again; its WAL keeps this height's votes.
        let base_stall = (self.settings.timeout_propose * 4).max(Duration::from_secs(10));
        let mut restarts: u32 = 0;
        loop {
            // Back off after restarts that did not help, with jitter, so the nodes of a stalled
            // network do not keep dropping each other's fresh connections in step.
            let jitter = Duration::from_millis(u64::from(self.key.public_key().as_bytes()[0]) * 20);
            let stall = base_stall * 2u32.pow(restarts.min(2)) + jitter;
            let first = MalSet::from_chain(&node.next_validator_set().await?);
            // A new engine whose swarm cannot bind the listen port would run without a network
            // (start_engine does not report it), so wait until the last incarnation let go.
            wait_until_port_free(&config.consensus.p2p.listen_addr).await;
            let started = start_engine(
                ctx.clone(),
                mal_node.clone(),
                config.clone(),
                MalCodec,
                MalCodec,
                None,
                first,
            )
            .await;
            let (mut channels, handle): (_, EngineHandle) = match started {
                Ok(x) => x,
                Err(e) => {
                    // The previous incarnation may still hold the listen port for a moment.
                    tracing::warn!("consensus engine did not start ({e}); retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.changed() => return Ok(()),
                    }
                }
            };
            let mut last_height = node.head().height;
            let mut last_progress = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let outcome = loop {
                tokio::select! {
                    msg = channels.consensus.recv() => match msg {
                        Some(msg) => app.handle(msg, &channels.network).await,
                        None => break Err(NodeError::Internal("consensus engine stopped".into())),
                    },
                    _ = shutdown.changed() => break Ok(true),
                    _ = tick.tick() => {
                        let h = node.head().height;
                        if h != last_height {
                            last_height = h;
                            last_progress = Instant::now();
                            restarts = 0;
                        } else if last_progress.elapsed() >= stall && app.cut_off(stall).await {
                            break Ok(false);
                        }
                    }
                }
            };
            stop_engine(handle).await;
            match outcome {
                Ok(true) => {
                    node.flush().await;
                    return Ok(());
                }
                Ok(false) => {
                    restarts += 1;
                    tracing::warn!(
                        height = last_height + 1,
                        "no block for {stall:?}: restarting the consensus engine to reconnect to peers"
                    );
                }
                Err(e) => {
                    tracing::error!("{e}; restarting the consensus engine");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Stops an engine gracefully: its children first, so the network actor's `post_stop` shuts the
/// libp2p swarm down (a killed actor skips `post_stop`, which would leave the swarm task running
/// with the listen port and stale peer connections), then the node actor; kill only as a last
/// resort.
async fn stop_engine(handle: EngineHandle) {
    let grace = Duration::from_secs(5);
    handle
        .actor
        .stop_children_and_wait(Some("engine restart".into()), Some(grace))
        .await;
    if handle
        .actor
        .stop_and_wait(Some("engine restart".into()), Some(grace))
        .await
        .is_err()
    {
        let _ = handle.actor.kill_and_wait(Some(grace)).await;
    }
    handle.handle.abort();
}

/// Waits (up to ten seconds) until the TCP port of `listen` can be bound again.
async fn wait_until_port_free(listen: &multiaddr::Multiaddr) {
    use multiaddr::Protocol;
    let mut ip = None;
    let mut port = None;
    for p in listen.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    let (Some(ip), Some(port)) = (ip, port) else {
        return;
    };
    if port == 0 {
        return;
    }
    let addr = std::net::SocketAddr::new(ip, port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpListener::bind(addr).is_err() {
        if Instant::now() >= deadline {
            tracing::warn!(%addr, "the peer-to-peer port is still taken; starting anyway");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Default)]
struct PartStream {
    height: Option<u64>,
    parts: std::collections::BTreeMap<u64, ProposalPart>,
    end: Option<u64>,
    bytes: usize,
    seen: u64,
}

struct Undecided {
    header: BlockHeader,
    txs: Vec<SignedTx>,
    /// Whether the block is in a file under `undecided/` (proposed or received blocks are;
    /// synced ones are written only if decided).
    stored: bool,
}

struct App {
    ctx: Ctx,
    node: Arc<Node>,
    key: Arc<SigningKey>,
    me: Address,
    settings: BftSettings,
    height: u64,
    round: Round,
    blocks: HashMap<BlockId, Undecided>,
    /// Values seen or built per (height, round), returned when a round (re)starts.
    values: HashMap<(u64, u32), Vec<ProposedValue<Ctx>>>,
    /// Our own proposal per (height, round): proposing twice in a round would be equivocation.
    own: HashMap<(u64, u32), BlockId>,
    streams: HashMap<(PeerId, Bytes), PartStream>,
    stream_counter: u64,
    last_block: Instant,
    /// When each validator's last authenticated proposal arrived: evidence of connectivity.
    heard: HashMap<Address, Instant>,
}

impl App {
    fn new(ctx: Ctx, node: Arc<Node>, key: Arc<SigningKey>, settings: BftSettings) -> Self {
        let me = Address(key.public_key());
        Self {
            ctx,
            node,
            key,
            me,
            settings,
            height: 0,
            round: Round::Nil,
            blocks: HashMap::new(),
            values: HashMap::new(),
            own: HashMap::new(),
            streams: HashMap::new(),
            stream_counter: 0,
            last_block: Instant::now(),
            heard: HashMap::new(),
        }
    }

    /// Whether this node heard (within `window`) from too few other validators to form a
    /// quorum with them: then it is probably cut off, not merely waiting for absent peers.
    async fn cut_off(&self, window: Duration) -> bool {
        let Some(set) = self.mal_set(self.node.head().height + 1).await else {
            return false;
        };
        let total: u64 = set.validators.iter().map(|v| v.power).sum();
        let mine = set
            .validators
            .iter()
            .find(|v| v.address == self.me)
            .map_or(0, |v| v.power);
        let heard: u64 = set
            .validators
            .iter()
            .filter(|v| v.address != self.me)
            .filter(|v| {
                self.heard
                    .get(&v.address)
                    .is_some_and(|t| t.elapsed() < window)
            })
            .map(|v| v.power)
            .sum();
        (mine + heard) * 3 <= total * 2
    }

    fn undecided_dir(&self) -> PathBuf {
        self.settings.home.join("undecided")
    }

    /// Blocks proposed or accepted before a restart, so the same (height, round) gets the same
    /// value and a decided block can still be found.
    fn load_undecided(&mut self) {
        let committed = self.node.head().height;
        let Ok(dir) = std::fs::read_dir(self.undecided_dir()) else {
            return;
        };
        for entry in dir.flatten() {
            let path = entry.path();
            let Some(name) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            // `{height}-{round}-{own|peer}-{hash prefix}`
            let fields: Vec<&str> = name.split('-').collect();
            let parsed = match fields.as_slice() {
                [h, r, kind, _] => h
                    .parse::<u64>()
                    .ok()
                    .zip(r.parse::<u32>().ok())
                    .map(|(h, r)| (h, r, *kind == "own")),
                _ => None,
            };
            let Some((h, r, own)) = parsed else { continue };
            if h <= committed {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok((header, txs)) =
                decode_block(&bytes, self.node.hash_alg(), crate::storage::MAX_BLOCK_TXS)
            else {
                tracing::warn!(path = %path.display(), "unreadable undecided block; ignored");
                continue;
            };
            let id = BlockId(header.hash());
            let proposer = Address(header.proposer.clone());
            if own {
                self.own.insert((h, r), id);
            }
            self.values.entry((h, r)).or_default().push(ProposedValue {
                height: Height(h),
                round: Round::new(r),
                valid_round: Round::Nil,
                proposer,
                value: id,
                validity: Validity::Valid,
            });
            self.blocks.insert(
                id,
                Undecided {
                    header,
                    txs,
                    stored: true,
                },
            );
        }
    }

    fn decided_dir(&self) -> PathBuf {
        self.settings.home.join("decided")
    }

    /// Commits the blocks that were decided before a crash but not yet in the database: their
    /// certificates are under `decided/`, their blocks under `undecided/`. Consensus then
    /// resumes after the last decided block, where Malachite's WAL holds the votes cast.
    async fn replay_decided(&mut self) -> Result<(), NodeError> {
        loop {
            let h = self.node.head().height + 1;
            let path = self.decided_dir().join(format!("{h}.cert"));
            let Ok(bytes) = std::fs::read(&path) else {
                return Ok(());
            };
            let cert = match CommitCertificate::decode(&bytes) {
                Ok(c) if c.height == h => c,
                _ => {
                    // Written with fsync before rename, so a bad file is damage, not a torn write.
                    tracing::error!(path = %path.display(), "unreadable decided certificate; ignored");
                    return Ok(());
                }
            };
            let Some(block) = self.blocks.remove(&BlockId(cert.block_hash)) else {
                tracing::error!(
                    height = h,
                    "the block of a decided certificate is missing; syncing it from peers"
                );
                return Ok(());
            };
            tracing::info!(height = h, "committing a block decided before the restart");
            self.node.commit(block.header, block.txs, cert).await?;
            self.node.flush().await;
            self.prune(h);
        }
    }

    /// Makes the decision of height `h` durable without waiting for the database: the block's
    /// file (written when it was proposed or received; synced blocks now) and its certificate.
    fn persist_decided(&self, cert: &CommitCertificate, block: &Undecided) -> std::io::Result<()> {
        use std::io::Write as _;
        if !block.stored
            && !self.persist_undecided(cert.height, cert.round, false, &block.header, &block.txs)
        {
            return Err(std::io::Error::other(
                "the decided block could not be written",
            ));
        }
        // The block file's rename must be durable before the certificate that refers to it.
        std::fs::File::open(self.undecided_dir())?.sync_all()?;
        let dir = self.decided_dir();
        let path = dir.join(format!("{}.cert", cert.height));
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&cert.encode())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&dir)?.sync_all()
    }

    /// Writes a proposed or received block to `undecided/`; false (logged) if it could not.
    fn persist_undecided(
        &self,
        h: u64,
        r: u32,
        own: bool,
        header: &BlockHeader,
        txs: &[SignedTx],
    ) -> bool {
        let kind = if own { "own" } else { "peer" };
        let name = format!("{h}-{r}-{kind}-{}.blk", &header.hash().to_hex()[..16]);
        let path = self.undecided_dir().join(name);
        let tmp = path.with_extension("tmp");
        let bytes = encode_block(header, txs);
        let res = (|| -> std::io::Result<()> {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        match res {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("could not persist an undecided block: {e}");
                false
            }
        }
    }

    fn prune(&mut self, decided: u64) {
        self.blocks.retain(|_, b| b.header.height > decided);
        self.values.retain(|(h, _), _| *h > decided);
        self.own.retain(|(h, _), _| *h > decided);
        self.streams
            .retain(|_, s| s.height.is_none_or(|h| h > decided));
        // Files go once their block is in the database: until then they are how a restarted
        // node finds the decided block.
        let stored = self.node.tip().height.min(decided);
        for dir in [self.undecided_dir(), self.decided_dir()] {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let h = name
                    .to_str()
                    .and_then(|n| n.split(['-', '.']).next())
                    .and_then(|h| h.parse::<u64>().ok());
                if h.is_some_and(|h| h <= stored) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    async fn chain_set(&self, h: u64) -> Option<ValidatorSet> {
        match self.node.validator_set_at(h).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(height = h, "validator set unavailable: {e}");
                None
            }
        }
    }

    async fn mal_set(&self, h: u64) -> Option<MalSet> {
        self.chain_set(h).await.map(|s| MalSet::from_chain(&s))
    }

    async fn handle(&mut self, msg: AppMsg<Ctx>, network: &mpsc::Sender<NetworkMsg<Ctx>>) {
        match msg {
            AppMsg::ConsensusReady { reply } => {
                let h = self.node.head().height + 1;
                match self.mal_set(h).await {
                    Some(set) => {
                        tracing::info!(height = h, "consensus ready");
                        let _ = reply.send((Height(h), set));
                    }
                    None => tracing::error!(height = h, "no validator set to start consensus"),
                }
            }
            AppMsg::StartedRound {
                height,
                round,
                reply_value,
                ..
            } => {
                self.height = height.0;
                self.round = round;
                let r = round.as_u32().unwrap_or(0);
                let known = self.values.get(&(height.0, r)).cloned().unwrap_or_default();
                let _ = reply_value.send(known);
                let current = self.height;
                self.streams
                    .retain(|_, s| s.height.is_none_or(|h| h >= current));
            }
            AppMsg::GetValue {
                height,
                round,
                timeout,
                reply,
            } => {
                let r = round.as_u32().unwrap_or(0);
                let id = match self.own.get(&(height.0, r)) {
                    Some(id) => Some(*id),
                    None => self.build(height.0, r, timeout).await,
                };
                if let Some(id) = id {
                    let _ = reply.send(LocallyProposedValue::new(height, round, id));
                    self.publish(height.0, round, Round::Nil, id, network).await;
                }
            }
            AppMsg::ExtendVote { reply, .. } => {
                let _ = reply.send(None);
            }
            AppMsg::VerifyVoteExtension { reply, .. } => {
                let _ = reply.send(Ok(()));
            }
            AppMsg::RestreamProposal {
                height,
                round,
                valid_round,
                value_id,
                ..
            } => {
                self.publish(height.0, round, valid_round, value_id, network)
                    .await;
            }
            AppMsg::GetHistoryMinHeight { reply } => {
                let _ = reply.send(Height(1));
            }
            AppMsg::ReceivedProposalPart { from, part, reply } => {
                let value = self.receive_part(from, part).await;
                let _ = reply.send(value);
            }
            AppMsg::GetValidatorSet { height, reply } => {
                let _ = reply.send(self.mal_set(height.0).await);
            }
            AppMsg::Decided {
                certificate, reply, ..
            } => {
                let h = certificate.height.0;
                let next = match self.decide(&certificate).await {
                    Ok(()) => {
                        self.prune(h);
                        self.last_block = Instant::now();
                        self.mal_set(h + 1)
                            .await
                            .map(|s| Next::Start(Height(h + 1), s))
                    }
                    Err(e) => {
                        tracing::error!(height = h, "could not commit a decided block: {e}");
                        self.mal_set(h).await.map(|s| Next::Restart(Height(h), s))
                    }
                };
                match next {
                    Some(n) => {
                        let _ = reply.send(n);
                    }
                    None => tracing::error!(height = h, "no validator set for the next height"),
                }
            }
            AppMsg::GetDecidedValue { height, reply } => {
                let _ = reply.send(self.decided_value(height.0).await);
            }
            AppMsg::ProcessSyncedValue {
                height,
                round,
                proposer,
                value_bytes,
                reply,
            } => {
                let value = self
                    .synced_value(height.0, round, proposer, &value_bytes)
                    .await;
                let _ = reply.send(value);
            }
        }
    }

    /// Build our proposal for (h, r), waiting first (within the propose timeout) for
    /// transactions or for the empty-block interval.
    async fn build(&mut self, h: u64, r: u32, timeout: Duration) -> Option<BlockId> {
        let started = Instant::now();
        let budget = timeout.mul_f32(0.5);
        loop {
            let since = self.last_block.elapsed();
            let ready = self.node.mempool.has_ready() && since >= self.settings.min_block_interval;
            if ready || since >= self.settings.empty_block_interval || started.elapsed() >= budget {
                break;
            }
            let wait = self
                .settings
                .empty_block_interval
                .saturating_sub(since)
                .min(budget.saturating_sub(started.elapsed()));
            let wait = if self.node.mempool.has_ready() {
                self.settings
                    .min_block_interval
                    .saturating_sub(since)
                    .min(wait)
            } else {
                wait
            };
            tokio::select! {
                _ = self.node.tx_arrived() => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
            }
        }
        let proposed = match self.node.propose(now_ms(), &self.me.0).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(height = h, "could not build a proposal: {e}");
                return None;
            }
        };
        if proposed.header.height != h {
            tracing::error!(
                height = h,
                built = proposed.header.height,
                "proposal for the wrong height"
            );
            return None;
        }
        let mut proposed = proposed;
        if byzantine_test_mode() {
            // Test builds only: propose a block whose state root is wrong, as a faulty or
            // malicious validator would, to check that the others refuse it.
            proposed.header.state_root.bytes[0] ^= 0xff;
        }
        let id = BlockId(proposed.header.hash());
        let stored = self.persist_undecided(h, r, true, &proposed.header, &proposed.txs);
        self.own.insert((h, r), id);
        self.values.entry((h, r)).or_default().push(ProposedValue {
            height: Height(h),
            round: Round::new(r),
            valid_round: Round::Nil,
            proposer: self.me.clone(),
            value: id,
            validity: Validity::Valid,
        });
        self.blocks.insert(
            id,
            Undecided {
                header: proposed.header,
                txs: proposed.txs,
                stored,
            },
        );
        Some(id)
    }

    /// Stream a block we propose (or re-propose) as Init, Data…, Fin parts.
    async fn publish(
        &mut self,
        h: u64,
        round: Round,
        pol_round: Round,
        id: BlockId,
        network: &mpsc::Sender<NetworkMsg<Ctx>>,
    ) {
        let Some(block) = self.blocks.get(&id) else {
            tracing::warn!(height = h, "asked to stream a block we do not have");
            return;
        };
        let bytes = encode_block(&block.header, &block.txs);
        let signature = Sig(self.key.sign(&proposal_sign_bytes(
            &self.ctx.chain_id,
            h,
            round,
            pol_round,
            &id,
        )));
        let mut parts = vec![ProposalPart::Init {
            height: Height(h),
            round,
            pol_round,
            proposer: self.me.clone(),
        }];
        parts.extend(
            bytes
                .chunks(PART_BYTES)
                .map(|c| ProposalPart::Data(c.to_vec())),
        );
        parts.push(ProposalPart::Fin { signature });
        self.stream_counter += 1;
        let mut sid = Vec::with_capacity(20);
        sid.extend_from_slice(&h.to_be_bytes());
        sid.extend_from_slice(&round.as_i64().to_be_bytes());
        sid.extend_from_slice(&(self.stream_counter as u32).to_be_bytes());
        let stream_id = StreamId::new(Bytes::from(sid));
        let n = parts.len() as u64;
        let mut msgs: Vec<StreamMessage<ProposalPart>> = parts
            .into_iter()
            .enumerate()
            .map(|(seq, part)| {
                StreamMessage::new(stream_id.clone(), seq as u64, StreamContent::Data(part))
            })
            .collect();
        msgs.push(StreamMessage::new(stream_id, n, StreamContent::Fin));
        // Sent from a task of its own: the network channel holds one message, and the app
        // loop must keep answering consensus (which may be what the network waits on).
        let network = network.clone();
        tokio::spawn(async move {
            for msg in msgs {
                if network
                    .send(NetworkMsg::PublishProposalPart(msg))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }

    async fn receive_part(
        &mut self,
        from: PeerId,
        msg: StreamMessage<ProposalPart>,
    ) -> Option<ProposedValue<Ctx>> {
        let key = (from, msg.stream_id.to_bytes());
        if !self.streams.contains_key(&key) && self.streams.len() >= MAX_STREAMS {
            // Drop the oldest incomplete stream: a peer cannot make us hold unbounded data.
            if let Some(oldest) = self
                .streams
                .iter()
                .min_by_key(|(_, s)| s.seen)
                .map(|(k, _)| k.clone())
            {
                self.streams.remove(&oldest);
            }
        }
        self.stream_counter += 1;
        let counter = self.stream_counter;
        let max_bytes = self.node.cfg.max_block_bytes + 64 * 1024;
        let stream = self.streams.entry(key.clone()).or_default();
        stream.seen = counter;
        match msg.content {
            StreamContent::Fin => stream.end = Some(msg.sequence),
            StreamContent::Data(part) => {
                if let ProposalPart::Init { height, .. } = &part {
                    stream.height = Some(height.0);
                }
                if let ProposalPart::Data(d) = &part {
                    stream.bytes += d.len();
                }
                stream.parts.insert(msg.sequence, part);
            }
        }
        if stream.bytes > max_bytes {
            self.streams.remove(&key);
            return None;
        }
        let complete = stream.end.is_some_and(|end| {
            stream.parts.len() as u64 == end && stream.parts.keys().copied().eq(0..end)
        });
        if !complete {
            return None;
        }
        let stream = self.streams.remove(&key)?;
        let parts: Vec<ProposalPart> = stream.parts.into_values().collect();
        self.accept_proposal(parts).await
    }

    /// Authenticate and validate a complete proposal.
    async fn accept_proposal(&mut self, parts: Vec<ProposalPart>) -> Option<ProposedValue<Ctx>> {
        let (first, rest) = parts.split_first()?;
        let (last, middle) = rest.split_last()?;
        let ProposalPart::Init {
            height,
            round,
            pol_round,
            proposer,
        } = first.clone()
        else {
            return None;
        };
        let ProposalPart::Fin { signature } = last else {
            return None;
        };
        let h = height.0;
        if h != self.node.head().height + 1 {
            // Not the height this node can validate now; value sync covers later heights.
            return None;
        }
        let r = round.as_u32()?;
        let set = self.mal_set(h).await?;
        if set
            .validators
            .get(proposer_index(&set, h, r))
            .map(|v| &v.address)
            != Some(&proposer)
        {
            tracing::warn!(height = h, round = r, proposer = %proposer, "proposal from a validator that is not this round's proposer");
            return None;
        }
        let mut bytes = Vec::new();
        for p in middle {
            match p {
                ProposalPart::Data(d) => bytes.extend_from_slice(d),
                _ => return None,
            }
        }
        let invalid = |reason: String| {
            tracing::warn!(height = h, round = r, proposer = %proposer, "invalid proposal: {reason}");
            record_evidence(&self.settings.home, h, r, &proposer, &reason);
        };
        let (header, txs) =
            match decode_block(&bytes, self.node.hash_alg(), crate::storage::MAX_BLOCK_TXS) {
                Ok(b) => b,
                Err(e) => {
                    invalid(format!("undecodable block: {e}"));
                    return None;
                }
            };
        let id = BlockId(header.hash());
        let msg = proposal_sign_bytes(&self.ctx.chain_id, h, round, pol_round, &id);
        if proposer.0.verify(&msg, &signature.0).is_err() {
            tracing::warn!(
                height = h,
                round = r,
                "proposal with a bad signature; ignored"
            );
            return None;
        }
        self.heard.insert(proposer.clone(), Instant::now());
        let validity = if header.height != h || header.proposer != proposer.0 && pol_round.is_nil()
        {
            invalid("header height or proposer does not match the proposal".into());
            Validity::Invalid
        } else if self.blocks.contains_key(&id) {
            Validity::Valid
        } else {
            match self.node.validate_proposal(&header, txs.clone()).await {
                Ok(()) => Validity::Valid,
                Err(e) => {
                    invalid(e.to_string());
                    Validity::Invalid
                }
            }
        };
        if validity.is_valid() && !self.blocks.contains_key(&id) {
            let stored = self.persist_undecided(h, r, false, &header, &txs);
            self.blocks.insert(
                id,
                Undecided {
                    header,
                    txs,
                    stored,
                },
            );
        }
        let value = ProposedValue {
            height,
            round,
            valid_round: pol_round,
            proposer,
            value: id,
            validity,
        };
        self.values.entry((h, r)).or_default().push(value.clone());
        Some(value)
    }

    async fn decide(&mut self, cert: &MalCert<Ctx>) -> Result<(), NodeError> {
        let id = cert.value_id;
        let block = self
            .blocks
            .remove(&id)
            .ok_or_else(|| NodeError::Invalid(format!("decided block {id} is unknown here")))?;
        let set = self
            .chain_set(cert.height.0)
            .await
            .ok_or_else(|| NodeError::Internal("no validator set for the decided height".into()))?;
        let mut signatures = Vec::with_capacity(cert.commit_signatures.len());
        for s in &cert.commit_signatures {
            let index = set
                .index_of(&s.address.0)
                .ok_or_else(|| NodeError::Invalid(format!("{} is not a validator", s.address)))?;
            signatures.push(CommitSig {
                validator_index: index as u32,
                signature: s.signature.0.clone(),
            });
        }
        signatures.sort_by_key(|s| s.validator_index);
        let ours = CommitCertificate {
            height: cert.height.0,
            round: cert.round.as_u32().unwrap_or(0),
            block_hash: id.0,
            signatures,
        };
        if crash_after_decision_test_mode() {
            // Test builds only: die with the decision on disk and the database behind, as a
            // crash at that instant would, so the test can check that a restart commits it.
            let _ = self.persist_decided(&ours, &block);
            std::process::abort();
        }
        if let Err(e) = self
            .node
            .commit(block.header.clone(), block.txs.clone(), ours.clone())
            .await
        {
            self.blocks.insert(id, block);
            return Err(e);
        }
        // The decision must be durable before consensus moves on: a restarted node resumes
        // after its last decided block. Its certificate on disk (the block is there already)
        // is enough, so the database write overlaps the next height; only if that file cannot
        // be written does consensus wait for the database.
        if let Err(e) = self.persist_decided(&ours, &block) {
            tracing::warn!(
                height = ours.height,
                "could not write the decided certificate ({e}); waiting for the database"
            );
            self.node.flush().await;
        }
        Ok(())
    }

    async fn decided_value(&self, h: u64) -> Option<RawDecidedValue<Ctx>> {
        let (header, txs, cert, set) = match self.node.decided_block(h).await {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(height = h, "cannot serve a decided block: {e}");
                return None;
            }
        };
        let commit_signatures = cert
            .signatures
            .iter()
            .filter_map(|s| {
                let v = set.validators().get(s.validator_index as usize)?;
                Some(CommitSignature {
                    address: Address(v.public_key.clone()),
                    signature: Sig(s.signature.clone()),
                })
            })
            .collect();
        let certificate = MalCert {
            height: Height(h),
            round: Round::new(cert.round),
            value_id: BlockId(cert.block_hash),
            commit_signatures,
        };
        Some(RawDecidedValue::new(
            Bytes::from(encode_block(&header, &txs)),
            certificate,
        ))
    }

    async fn synced_value(
        &mut self,
        h: u64,
        round: Round,
        proposer: Address,
        bytes: &[u8],
    ) -> Option<ProposedValue<Ctx>> {
        let (header, txs) =
            decode_block(bytes, self.node.hash_alg(), crate::storage::MAX_BLOCK_TXS).ok()?;
        if header.height != h {
            return None;
        }
        let id = BlockId(header.hash());
        let decided_already = h <= self.node.head().height;
        let validity = if decided_already {
            self.compare_with_committed(h, id).await?
        } else if self.blocks.contains_key(&id) {
            Validity::Valid
        } else {
            match self.node.validate_proposal(&header, txs.clone()).await {
                Ok(()) => Validity::Valid,
                Err(e) => {
                    tracing::warn!(height = h, "synced block is invalid: {e}");
                    Validity::Invalid
                }
            }
        };
        if validity.is_valid() && !decided_already {
            self.blocks.insert(
                id,
                Undecided {
                    header,
                    txs,
                    stored: false,
                },
            );
        }
        Some(ProposedValue {
            height: Height(h),
            round,
            valid_round: Round::Nil,
            proposer,
            value: id,
            validity,
        })
    }

    /// A sync response that arrived after consensus decided height `h`: it is the block we
    /// committed (stale; Malachite drops it as a past height) or it contradicts our chain, which
    /// only a fork could explain. `None` when our own block cannot be read.
    async fn compare_with_committed(&self, h: u64, id: BlockId) -> Option<Validity> {
        let head = self.node.head();
        let ours = if h == head.height {
            Some(head.hash)
        } else {
            match self.node.block_header(h).await {
                Ok(found) => found.map(|(ours, _, _)| ours.hash()),
                Err(e) => {
                    tracing::warn!(height = h, "cannot read our block to compare: {e}");
                    return None;
                }
            }
        };
        if ours == Some(id.0) {
            Some(Validity::Valid)
        } else {
            tracing::warn!(
                height = h,
                "synced block differs from the block we committed"
            );
            Some(Validity::Invalid)
        }
    }
}

/// Debug builds started with TRELLIS_TEST_BYZANTINE=invalid-proposal act as a Byzantine
/// proposer (for the fault tests). Release builds never do.
fn byzantine_test_mode() -> bool {
    cfg!(debug_assertions)
        && std::env::var("TRELLIS_TEST_BYZANTINE").is_ok_and(|v| v == "invalid-proposal")
}

/// Debug builds started with TRELLIS_TEST_CRASH=after-decision abort at the first block they
/// decide, right after writing its certificate (for the recovery test). Release builds never do.
fn crash_after_decision_test_mode() -> bool {
    cfg!(debug_assertions)
        && std::env::var("TRELLIS_TEST_CRASH").is_ok_and(|v| v == "after-decision")
}

/// Misbehaviour seen by this node (invalid proposals signed by their proposer), appended to
/// `evidence.jsonl` in the consensus directory. Malachite itself records double votes.
fn record_evidence(
    home: &std::path::Path,
    height: u64,
    round: u32,
    validator: &Address,
    reason: &str,
) {
    use std::io::Write as _;
    let line = serde_json::json!({
        "kind": "invalid_proposal",
        "height": height,
        "round": round,
        "validator": validator.to_string(),
        "reason": reason,
        "observed_ms": now_ms(),
    });
    let res = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("evidence.jsonl"))
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = res {
        tracing::error!("could not record evidence: {e}");
    }
}
