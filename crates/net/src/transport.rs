//! The UDP transport: one socket on the gossip port, a receive task that decodes and
//! hands events to the daemon through a bounded channel, a timer task that drives
//! [`Gossip`], and a cloneable [`NetHandle`] to send with.
//!
//! The receive task never waits on the daemon: a full channel drops the event and
//! counts it ([`NetStats::events_dropped_channel_full`]); gossip replies are sent with
//! `try_send_to`, so a full socket buffer drops the reply instead of stalling.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use huione_core::{Block, Hash, InstanceAnnouncement, SignedVote};
use huione_keys::Keypair;
use huione_os::clock::now_ms;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::contact::{ContactInfo, InstanceId};
use crate::gossip::{DuplicateInstance, Gossip, GossipConfig, NodeInfo, Output};
use crate::stats::{bump, LogLimiter, NetStats};
use crate::wire::{self, EncodeError, Message, RepairRequest};

/// Everything needed to start the network of one node.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Where to bind the gossip socket, e.g. `127.0.0.1:8001` (port 0 picks one).
    pub bind_addr: SocketAddr,
    /// The address peers should use; defaults to the bound address. Set it when
    /// binding to an unspecified address such as `0.0.0.0`.
    pub advertised_gossip_addr: Option<SocketAddr>,
    pub rpc_addr: Option<SocketAddr>,
    pub tpu_vote_addr: Option<SocketAddr>,
    pub identity: Keypair,
    pub instance: InstanceId,
    /// Software version announced in contact info (at most 32 bytes).
    pub version: String,
    /// The cluster's genesis hash; peers with another one are ignored.
    pub genesis_hash: Hash,
    /// Known nodes to bootstrap from (`--entrypoint`).
    pub entrypoints: Vec<SocketAddr>,
    pub gossip: GossipConfig,
    /// Capacity of the event channel to the daemon.
    pub event_channel_capacity: usize,
    /// How often the gossip timer runs (push/pull intervals are checked each tick).
    pub tick_interval_ms: u64,
    /// At most one log line per drop reason per this interval.
    pub drop_log_interval_ms: u64,
}

impl NetConfig {
    /// A config with default gossip timing and limits.
    pub fn new(
        bind_addr: SocketAddr,
        identity: Keypair,
        instance: InstanceId,
        genesis_hash: Hash,
        entrypoints: Vec<SocketAddr>,
    ) -> Self {
        // Different nodes pick different pull targets; the same node is reproducible.
        let seed = u64::from_le_bytes(identity.pubkey().0[..8].try_into().expect("8 bytes"));
        NetConfig {
            bind_addr,
            advertised_gossip_addr: None,
            rpc_addr: None,
            tpu_vote_addr: None,
            identity,
            instance,
            version: concat!("huione ", env!("CARGO_PKG_VERSION")).to_string(),
            genesis_hash,
            entrypoints,
            gossip: GossipConfig {
                rng_seed: seed,
                ..GossipConfig::default()
            },
            event_channel_capacity: 1024,
            tick_interval_ms: 100,
            drop_log_interval_ms: 10_000,
        }
    }
}

/// A decoded message (or gossip finding) for the daemon. Blocks, votes and
/// announcements are decoded but not verified: the core checks them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    Vote {
        from: SocketAddr,
        vote: SignedVote,
    },
    Block {
        from: SocketAddr,
        block: Block,
    },
    RepairRequest {
        from: SocketAddr,
        request: RepairRequest,
    },
    RepairResponse {
        from: SocketAddr,
        block: Block,
    },
    Announcement {
        from: SocketAddr,
        announcement: InstanceAnnouncement,
    },
    /// Another instance runs our identity (see [`DuplicateInstance::we_are_older`]).
    DuplicateInstance(DuplicateInstance),
}

/// Errors of the transport's calls.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot bind the gossip socket to {addr}: {source}. {}", bind_hint(*addr, source))]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "no entrypoint ({}) answered the address echo within {waited_ms} ms, so this node \
         cannot learn the address to advertise. Check that the entrypoint runs and that its \
         UDP gossip port is reachable from here, or set --gossip-host to this machine's address",
        entrypoints.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    NoEcho {
        entrypoints: Vec<SocketAddr>,
        waited_ms: u64,
    },
    #[error(transparent)]
    Address(#[from] crate::addressing::AddressError),
    #[error("cannot read the gossip socket's local address: {0}")]
    LocalAddr(std::io::Error),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("sending to {to} failed: {source}")]
    Send {
        to: SocketAddr,
        source: std::io::Error,
    },
}

struct Shared {
    socket: UdpSocket,
    gossip: Mutex<Gossip>,
    stats: Arc<NetStats>,
    events: mpsc::Sender<NetEvent>,
}

/// Sends messages and reads gossip state. Cheap to clone.
#[derive(Clone)]
pub struct NetHandle {
    shared: Arc<Shared>,
}

/// The running transport. Dropping it (or [`Transport::shutdown`]) stops its tasks;
/// it dereferences to its [`NetHandle`].
pub struct Transport {
    handle: NetHandle,
    tasks: Vec<JoinHandle<()>>,
}

impl Transport {
    /// Binds the gossip socket and starts the receive and gossip tasks. Must be called
    /// inside a tokio runtime. Events arrive on the returned receiver.
    pub async fn bind(cfg: NetConfig) -> Result<(Transport, mpsc::Receiver<NetEvent>), NetError> {
        let socket = UdpSocket::bind(cfg.bind_addr)
            .await
            .map_err(|source| NetError::Bind {
                addr: cfg.bind_addr,
                source,
            })?;
        let local = socket.local_addr().map_err(NetError::LocalAddr)?;
        // Port 0 in the advertised address means "the port we were given".
        let gossip_addr = match cfg.advertised_gossip_addr {
            Some(a) if a.port() == 0 => SocketAddr::new(a.ip(), local.port()),
            Some(a) => a,
            None => local,
        };
        if gossip_addr.ip().is_unspecified() {
            return Err(
                crate::addressing::AddressError::UnspecifiedGossipHost(gossip_addr.ip()).into(),
            );
        }
        let node = NodeInfo {
            gossip_addr,
            rpc_addr: cfg.rpc_addr,
            tpu_vote_addr: cfg.tpu_vote_addr,
            version: cfg.version.clone(),
            genesis_hash: cfg.genesis_hash,
            instance: cfg.instance.clone(),
        };
        let stats = Arc::new(NetStats::default());
        let gossip = Gossip::new(
            cfg.gossip.clone(),
            cfg.identity.clone(),
            node,
            cfg.entrypoints.clone(),
            stats.clone(),
            now_ms(),
        )?;
        let (tx, rx) = mpsc::channel(cfg.event_channel_capacity.max(1));
        let shared = Arc::new(Shared {
            socket,
            gossip: Mutex::new(gossip),
            stats,
            events: tx,
        });
        let tasks = vec![
            tokio::spawn(receive_loop(shared.clone(), cfg.drop_log_interval_ms)),
            tokio::spawn(gossip_loop(shared.clone(), cfg.tick_interval_ms.max(1))),
        ];
        tracing::info!(%local, identity = %cfg.identity.pubkey(), "gossip socket bound");
        Ok((
            Transport {
                handle: NetHandle { shared },
                tasks,
            },
            rx,
        ))
    }

    pub fn handle(&self) -> NetHandle {
        self.handle.clone()
    }

    /// Stops the receive and gossip tasks. Sends through handles still work.
    pub fn shutdown(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Deref for Transport {
    type Target = NetHandle;
    fn deref(&self) -> &NetHandle {
        &self.handle
    }
}

impl NetHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.shared
            .socket
            .local_addr()
            .expect("a bound UDP socket has a local address")
    }

    /// The counters, for the daemon's metrics.
    pub fn stats(&self) -> &Arc<NetStats> {
        &self.shared.stats
    }

    /// Every other node in the gossip table.
    pub fn peers(&self) -> Vec<ContactInfo> {
        self.gossip().peers()
    }

    /// Our current signed contact info.
    pub fn contact_info(&self) -> ContactInfo {
        self.gossip().own().clone()
    }

    /// Announces a new identity/instance from now on (`set-identity`); pushed at the
    /// next gossip tick.
    pub fn set_identity(&self, keypair: &Keypair, instance: InstanceId) -> Result<(), NetError> {
        let out = self
            .gossip()
            .set_identity(keypair.clone(), instance, now_ms())?;
        deliver_duplicates(&self.shared, out.duplicates);
        Ok(())
    }

    /// Sends one message to one address.
    pub async fn send(&self, to: SocketAddr, msg: &Message) -> Result<(), NetError> {
        let bytes = wire::encode(msg)?;
        self.send_bytes(to, &bytes).await
    }

    /// Sends one message to every known peer; returns how many it was sent to.
    /// Failures to individual peers are counted in `send_errors`, not returned.
    pub async fn broadcast(&self, msg: &Message) -> Result<usize, NetError> {
        let bytes = wire::encode(msg)?;
        let mut targets: Vec<SocketAddr> = self.peers().iter().map(|p| p.gossip_addr).collect();
        let local = self.contact_info().gossip_addr;
        targets.retain(|a| *a != local);
        targets.sort();
        targets.dedup();
        let mut sent = 0;
        for to in targets {
            if self.send_bytes(to, &bytes).await.is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    }

    pub async fn broadcast_vote(&self, vote: &SignedVote) -> Result<usize, NetError> {
        self.broadcast(&Message::Vote(vote.clone())).await
    }

    pub async fn broadcast_block(&self, block: &Block) -> Result<usize, NetError> {
        self.broadcast(&Message::Block(block.clone())).await
    }

    pub async fn broadcast_announcement(
        &self,
        a: &InstanceAnnouncement,
    ) -> Result<usize, NetError> {
        self.broadcast(&Message::Announcement(a.clone())).await
    }

    pub async fn send_repair_request(
        &self,
        to: SocketAddr,
        request: RepairRequest,
    ) -> Result<(), NetError> {
        self.send(to, &Message::RepairRequest(request)).await
    }

    /// Answers a repair request: one datagram per block.
    pub async fn send_repair_response(
        &self,
        to: SocketAddr,
        blocks: &[Block],
    ) -> Result<(), NetError> {
        for b in blocks {
            self.send(to, &Message::RepairResponse(b.clone())).await?;
        }
        Ok(())
    }

    async fn send_bytes(&self, to: SocketAddr, bytes: &[u8]) -> Result<(), NetError> {
        match self.shared.socket.send_to(bytes, to).await {
            Ok(_) => {
                bump(&self.shared.stats.datagrams_sent);
                Ok(())
            }
            Err(source) => {
                bump(&self.shared.stats.send_errors);
                Err(NetError::Send { to, source })
            }
        }
    }

    fn gossip(&self) -> MutexGuard<'_, Gossip> {
        lock(&self.shared.gossip)
    }
}

/// What to tell an operator whose bind failed: a port in use is another process; an
/// address not available is not one of this machine's addresses.
fn bind_hint(addr: SocketAddr, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "Another process (another validator?) already uses port {} on {}: choose \
             another --gossip-port or stop it",
            addr.port(),
            addr.ip()
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this machine: set --bind-address to one of its \
             addresses, or 0.0.0.0 for all",
            addr.ip()
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "Binding port {} needs more privileges: use a port above 1023",
            addr.port()
        ),
        _ => "Check --bind-address and --gossip-port".to_string(),
    }
}

/// Asks the entrypoints which source address they see for this machine (an address echo,
/// like Solana's ip-echo), from a fresh socket bound to `bind_ip`. Tries every entrypoint
/// every 250 ms until one answers or `timeout` passes; the answer is checked with
/// [`crate::addressing::check_echo`].
pub async fn learn_own_address(
    bind_ip: std::net::IpAddr,
    entrypoints: &[SocketAddr],
    timeout: Duration,
) -> Result<(std::net::IpAddr, SocketAddr), NetError> {
    let local = SocketAddr::new(bind_ip, 0);
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|source| NetError::Bind {
            addr: local,
            source,
        })?;
    // Only matches replies to requests; not a secret.
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32);
    let request = wire::encode(&Message::EchoRequest { nonce })?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 2048];
    while tokio::time::Instant::now() < deadline {
        for e in entrypoints {
            let _ = socket.send_to(&request, e).await;
        }
        let round = (tokio::time::Instant::now() + Duration::from_millis(250)).min(deadline);
        while let Ok(Ok((len, from))) =
            tokio::time::timeout_at(round, socket.recv_from(&mut buf)).await
        {
            if !entrypoints.contains(&from) {
                continue;
            }
            if let Ok(Message::EchoReply { nonce: n, addr }) = wire::decode(&buf[..len]) {
                if n == nonce {
                    let ip = crate::addressing::check_echo(from, addr.ip())?;
                    return Ok((ip, from));
                }
            }
        }
    }
    Err(NetError::NoEcho {
        entrypoints: entrypoints.to_vec(),
        waited_ms: timeout.as_millis() as u64,
    })
}

/// The gossip state holds no invariant a panic elsewhere could break mid-update that
/// matters more than staying up, so a poisoned lock is used as is.
fn lock(m: &Mutex<Gossip>) -> MutexGuard<'_, Gossip> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn receive_loop(shared: Arc<Shared>, log_interval_ms: u64) {
    // Larger than any UDP payload, so an oversize datagram is seen whole and rejected.
    let mut buf = vec![0u8; 65_536];
    let mut limiter = LogLimiter::new(log_interval_ms);
    loop {
        let (len, from) = match shared.socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "gossip socket receive error");
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        bump(&shared.stats.datagrams_received);
        shared
            .stats
            .bytes_received
            .fetch_add(len as u64, std::sync::atomic::Ordering::Relaxed);
        let msg = match wire::decode(&buf[..len]) {
            Ok(m) => m,
            Err(e) => {
                let reason = e.reason();
                shared.stats.record_drop(reason);
                if let Some(suppressed) = limiter.allow(reason, now_ms()) {
                    tracing::warn!(%from, len, error = %e, suppressed, reason = reason.as_str(), "dropped datagram");
                }
                continue;
            }
        };
        if !dispatch(&shared, from, msg, &mut limiter) {
            tracing::info!("event receiver dropped; gossip receive loop stops");
            return;
        }
    }
}

/// Handles one decoded message. Returns false when the daemon's receiver is gone.
fn dispatch(shared: &Shared, from: SocketAddr, msg: Message, limiter: &mut LogLimiter) -> bool {
    if !matches!(msg, Message::EchoRequest { .. } | Message::EchoReply { .. }) {
        shared.stats.record_peer_message(now_ms());
    }
    let event = match msg {
        Message::PushContactInfos(infos) => {
            let out = lock(&shared.gossip).on_push(infos, now_ms());
            return run_gossip_output(shared, from, out, limiter);
        }
        Message::PullRequest(req) => {
            let out = lock(&shared.gossip).on_pull_request(from, req, now_ms());
            return run_gossip_output(shared, from, out, limiter);
        }
        Message::Vote(vote) => NetEvent::Vote { from, vote },
        Message::Block(block) => NetEvent::Block { from, block },
        Message::RepairRequest(request) => NetEvent::RepairRequest { from, request },
        Message::RepairResponse(block) => NetEvent::RepairResponse { from, block },
        Message::Announcement(announcement) => NetEvent::Announcement { from, announcement },
        Message::EchoRequest { nonce } => {
            // Unauthenticated but harmless: the reply is smaller than the request.
            let reply = wire::encode(&Message::EchoReply { nonce, addr: from });
            match reply
                .ok()
                .and_then(|b| shared.socket.try_send_to(&b, from).ok())
            {
                Some(_) => bump(&shared.stats.datagrams_sent),
                None => bump(&shared.stats.send_errors),
            }
            return true;
        }
        // Only `learn_own_address`'s own socket expects replies.
        Message::EchoReply { .. } => return true,
    };
    deliver(shared, event)
}

/// Logs the records gossip dropped (rate-limited), then sends and delivers its output.
fn run_gossip_output(
    shared: &Shared,
    from: SocketAddr,
    out: Output,
    limiter: &mut LogLimiter,
) -> bool {
    for (reason, identity) in &out.dropped {
        if let Some(suppressed) = limiter.allow(*reason, now_ms()) {
            tracing::warn!(%from, %identity, suppressed, reason = reason.as_str(), "dropped contact info");
        }
    }
    execute_nonblocking(shared, out)
}

/// Sends gossip output without waiting (drops and counts on a full socket buffer).
fn execute_nonblocking(shared: &Shared, out: Output) -> bool {
    for o in out.sends {
        let sent = wire::encode(&o.msg)
            .ok()
            .and_then(|bytes| shared.socket.try_send_to(&bytes, o.to).ok());
        match sent {
            Some(_) => bump(&shared.stats.datagrams_sent),
            None => bump(&shared.stats.send_errors),
        }
    }
    deliver_duplicates(shared, out.duplicates)
}

fn deliver_duplicates(shared: &Shared, dups: Vec<DuplicateInstance>) -> bool {
    for d in dups {
        tracing::warn!(
            identity = %d.identity,
            ours = %d.ours.id,
            ours_started_ms = d.ours.started_ms,
            theirs = %d.theirs.id,
            theirs_started_ms = d.theirs.started_ms,
            their_addr = %d.their_gossip_addr,
            "another instance is running this identity"
        );
        if !deliver(shared, NetEvent::DuplicateInstance(d)) {
            return false;
        }
    }
    true
}

/// Hands an event to the daemon without waiting. Returns false when the receiver is gone.
fn deliver(shared: &Shared, event: NetEvent) -> bool {
    match shared.events.try_send(event) {
        Ok(()) => {
            bump(&shared.stats.events_delivered);
            true
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            bump(&shared.stats.events_dropped_channel_full);
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

async fn gossip_loop(shared: Arc<Shared>, tick_ms: u64) {
    let mut interval = tokio::time::interval(Duration::from_millis(tick_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let out = lock(&shared.gossip).tick(now_ms());
        if !execute_nonblocking(&shared, out) {
            return;
        }
    }
}
