//! CRDS-lite: the table of the latest signed [`ContactInfo`] per identity, and the
//! push/pull rules that spread it. No sockets and no clock: every call takes `now_ms`
//! and returns the datagrams to send and the events to deliver, so the whole protocol
//! runs in unit tests (quinn-proto style). Randomness (pull targets, push fanout) comes
//! from a seeded [`SplitMix64`].
//!
//! Rules:
//! - A record is accepted only if it is for our cluster (genesis hash), signed by its
//!   identity, not signed more than `max_clock_skew_ms` in the future nor more than
//!   `entry_ttl_ms` in the past, and newer (`wallclock_ms`) than the one we hold.
//!   The signature is checked only for records that would be accepted, so re-pushes of
//!   known records cost no ed25519 work.
//! - A record advertising an address we cannot reach (unspecified, or loopback while we
//!   advertise a non-loopback address) is dropped and counted: that node is misconfigured,
//!   and sending to it would reach ourselves.
//! - An entry expires `entry_ttl_ms` after the earlier of its signing time and when we
//!   received it, so a dead node's record cannot circulate for ever.
//! - The table holds at most `max_peers` identities; a new identity is refused while it
//!   is full (existing entries keep refreshing; stale ones expire and make room).
//! - Every `push_interval_ms` we re-sign our record and push it to the entrypoints and
//!   up to `push_fanout` random peers. Every `pull_interval_ms` we send a pull request
//!   (our record + digests of all we hold) to one random entrypoint or peer; the answer
//!   is every record the requester lacks, ours included, in at most
//!   [`MAX_PULL_RESPONSE_DATAGRAMS`] datagrams. A new node thus learns the whole cluster
//!   from one entrypoint.
//! - A record for our identity from another instance raises [`DuplicateInstance`]
//!   (again at most every `duplicate_reemit_ms` while it continues). The pull responder
//!   returns records of the requester's identity from other instances, so both
//!   instances of an identity learn about each other through any common peer.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use huione_core::{Hash, SplitMix64};
use huione_keys::{Keypair, Pubkey};

use crate::contact::{ContactInfo, InstanceId};
use crate::stats::{bump, DropReason, NetStats};
use crate::wire::{EncodeError, Message, PullRequest, MAX_PULL_DIGEST, MAX_PUSH_BATCH};

/// Datagrams in one pull response (so one request yields at most 4 × 32 records).
pub const MAX_PULL_RESPONSE_DATAGRAMS: usize = 4;

/// Gossip timing and limits. Defaults suit a real cluster; tests shorten the intervals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipConfig {
    pub push_interval_ms: u64,
    pub pull_interval_ms: u64,
    /// An entry not refreshed for this long is removed.
    pub entry_ttl_ms: u64,
    /// Identities held at most (capped at [`MAX_PULL_DIGEST`]).
    pub max_peers: usize,
    /// Records signed further than this in the future are dropped.
    pub max_clock_skew_ms: u64,
    /// Random peers (besides the entrypoints) each push goes to.
    pub push_fanout: usize,
    /// While a duplicate instance keeps announcing itself, repeat the event this often.
    pub duplicate_reemit_ms: u64,
    /// Seed for pull-target and push-fanout choices.
    pub rng_seed: u64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            push_interval_ms: 500,
            pull_interval_ms: 1_000,
            entry_ttl_ms: 15_000,
            max_peers: 1_024,
            max_clock_skew_ms: 10_000,
            push_fanout: 16,
            duplicate_reemit_ms: 2_000,
            rng_seed: 0x6875_696f_6e65,
        }
    }
}

/// What we announce about ourselves, besides the identity (which comes with the keypair).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub gossip_addr: SocketAddr,
    pub rpc_addr: Option<SocketAddr>,
    pub tpu_vote_addr: Option<SocketAddr>,
    pub version: String,
    pub genesis_hash: Hash,
    pub instance: InstanceId,
}

/// Another running instance announced our identity. The daemon decides who exits
/// (by PRODUCT.md, the older one); [`DuplicateInstance::we_are_older`] tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateInstance {
    pub identity: Pubkey,
    pub ours: InstanceId,
    pub theirs: InstanceId,
    pub their_gossip_addr: SocketAddr,
    pub their_wallclock_ms: u64,
}

impl DuplicateInstance {
    /// True when our instance started first (so we are the one that should exit).
    pub fn we_are_older(&self) -> bool {
        self.ours.is_older_than(&self.theirs)
    }
}

/// One datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: SocketAddr,
    pub msg: Message,
}

/// What a gossip step asks the driver to do.
#[derive(Debug, Default)]
pub struct Output {
    pub sends: Vec<Outgoing>,
    pub duplicates: Vec<DuplicateInstance>,
    /// Records dropped in this step (already counted in [`NetStats`]), for logging.
    pub dropped: Vec<(DropReason, Pubkey)>,
}

/// What became of one received record.
#[must_use]
enum Received {
    /// New or newer, verified, stored.
    Accepted,
    /// Not newer than what we hold (not verified).
    NotNewer,
    /// Refused and counted.
    Dropped,
}

struct Entry {
    info: ContactInfo,
    received_ms: u64,
}

/// The latest record per identity, bounded. Pure data; [`Gossip`] applies the rules.
pub struct CrdsTable {
    entries: BTreeMap<Pubkey, Entry>,
    max_entries: usize,
}

impl CrdsTable {
    pub fn new(max_entries: usize) -> Self {
        CrdsTable {
            entries: BTreeMap::new(),
            max_entries: max_entries.min(MAX_PULL_DIGEST),
        }
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn get(&self, identity: &Pubkey) -> Option<&ContactInfo> {
        self.entries.get(identity).map(|e| &e.info)
    }
    pub fn iter(&self) -> impl Iterator<Item = &ContactInfo> {
        self.entries.values().map(|e| &e.info)
    }
    /// True when `info` is newer than what we hold for its identity.
    fn is_newer(&self, info: &ContactInfo) -> bool {
        self.entries
            .get(&info.identity)
            .is_none_or(|e| info.wallclock_ms > e.info.wallclock_ms)
    }
    fn insert(&mut self, info: ContactInfo, now_ms: u64) -> Result<(), DropReason> {
        if !self.entries.contains_key(&info.identity) && self.entries.len() >= self.max_entries {
            return Err(DropReason::TableFull);
        }
        self.entries.insert(
            info.identity,
            Entry {
                info,
                received_ms: now_ms,
            },
        );
        Ok(())
    }
    /// Removes entries older than `ttl_ms`; returns how many.
    fn expire(&mut self, now_ms: u64, ttl_ms: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| {
            let since = e.info.wallclock_ms.min(e.received_ms);
            now_ms.saturating_sub(since) <= ttl_ms
        });
        before - self.entries.len()
    }
}

/// The gossip state machine of one node.
pub struct Gossip {
    cfg: GossipConfig,
    keypair: Keypair,
    node: NodeInfo,
    own: ContactInfo,
    entrypoints: Vec<SocketAddr>,
    table: CrdsTable,
    rng: SplitMix64,
    next_push_ms: u64,
    next_pull_ms: u64,
    /// The other instance we last reported, and when.
    last_duplicate: Option<(InstanceId, u64)>,
    stats: Arc<NetStats>,
}

impl Gossip {
    /// A node that will announce `node` as `keypair`'s identity and bootstrap from
    /// `entrypoints`. The first [`Gossip::tick`] pushes and pulls at once.
    pub fn new(
        cfg: GossipConfig,
        keypair: Keypair,
        node: NodeInfo,
        entrypoints: Vec<SocketAddr>,
        stats: Arc<NetStats>,
        now_ms: u64,
    ) -> Result<Self, EncodeError> {
        let own = sign_own(&keypair, &node, now_ms)?;
        let mut entrypoints = entrypoints;
        entrypoints.retain(|a| *a != node.gossip_addr);
        entrypoints.dedup();
        Ok(Gossip {
            table: CrdsTable::new(cfg.max_peers),
            rng: SplitMix64(cfg.rng_seed),
            cfg,
            keypair,
            node,
            own,
            entrypoints,
            next_push_ms: 0,
            next_pull_ms: 0,
            last_duplicate: None,
            stats,
        })
    }

    /// Our current signed record.
    pub fn own(&self) -> &ContactInfo {
        &self.own
    }

    pub fn table(&self) -> &CrdsTable {
        &self.table
    }

    /// Every other node we know (including another instance of our own identity).
    pub fn peers(&self) -> Vec<ContactInfo> {
        self.table.iter().cloned().collect()
    }

    /// Switches to another identity (set-identity) or instance. The next tick pushes the
    /// new record at once. A record we hold for the new identity from another instance
    /// is reported immediately.
    pub fn set_identity(
        &mut self,
        keypair: Keypair,
        instance: InstanceId,
        now_ms: u64,
    ) -> Result<Output, EncodeError> {
        let mut node = self.node.clone();
        node.instance = instance;
        self.own = sign_own(&keypair, &node, now_ms)?;
        self.keypair = keypair;
        self.node = node;
        self.next_push_ms = now_ms;
        self.last_duplicate = None;
        let mut out = Output::default();
        if let Some(other) = self.table.get(&self.own.identity).cloned() {
            self.check_duplicate(&other, now_ms, &mut out);
        }
        Ok(out)
    }

    /// Records pushed to us (or a pull response).
    pub fn on_push(&mut self, infos: Vec<ContactInfo>, now_ms: u64) -> Output {
        let mut out = Output::default();
        for info in infos {
            let _ = self.receive(info, now_ms, &mut out);
        }
        out
    }

    /// A pull request from `from` (the datagram's source, where the answer goes). Only
    /// a request carrying an authentic record of our cluster is answered, so a forged
    /// request cannot make us send to an address of its choosing.
    pub fn on_pull_request(&mut self, from: SocketAddr, req: PullRequest, now_ms: u64) -> Output {
        let mut out = Output::default();
        let requester = req.from.clone();
        let authentic = match self.receive(req.from, now_ms, &mut out) {
            Received::Accepted => true,
            Received::Dropped => false,
            Received::NotNewer => {
                self.table.get(&requester.identity) == Some(&requester)
                    || requester.verify().is_ok()
            }
        };
        if !authentic {
            return out;
        }
        let known: HashSet<u64> = req.known.into_iter().collect();
        let missing = std::iter::once(&self.own)
            .chain(self.table.iter())
            .filter(|ci| !known.contains(&ci.digest()))
            .filter(|ci| {
                (ci.identity, &ci.instance.id) != (requester.identity, &requester.instance.id)
            })
            .take(MAX_PUSH_BATCH * MAX_PULL_RESPONSE_DATAGRAMS)
            .cloned()
            .collect::<Vec<_>>();
        for batch in missing.chunks(MAX_PUSH_BATCH) {
            out.sends.push(Outgoing {
                to: from,
                msg: Message::PushContactInfos(batch.to_vec()),
            });
        }
        out
    }

    /// Time passes: expire, and push/pull when due.
    pub fn tick(&mut self, now_ms: u64) -> Output {
        let mut out = Output::default();
        let expired = self.table.expire(now_ms, self.cfg.entry_ttl_ms);
        for _ in 0..expired {
            bump(&self.stats.contact_infos_expired);
        }
        if now_ms >= self.next_push_ms {
            self.next_push_ms = now_ms + self.cfg.push_interval_ms;
            self.refresh_own(now_ms);
            for to in self.push_targets() {
                out.sends.push(Outgoing {
                    to,
                    msg: Message::PushContactInfos(vec![self.own.clone()]),
                });
            }
        }
        if now_ms >= self.next_pull_ms {
            self.next_pull_ms = now_ms + self.cfg.pull_interval_ms;
            if let Some(to) = self.pull_target() {
                self.refresh_own(now_ms);
                let known = self.table.iter().map(ContactInfo::digest).collect();
                out.sends.push(Outgoing {
                    to,
                    msg: Message::PullRequest(PullRequest {
                        from: self.own.clone(),
                        known,
                    }),
                });
            }
        }
        out
    }

    fn refresh_own(&mut self, now_ms: u64) {
        if now_ms > self.own.wallclock_ms {
            // The fields were signable at construction and have not changed.
            if let Ok(own) = sign_own(&self.keypair, &self.node, now_ms) {
                self.own = own;
            }
        }
    }

    /// One received record: filter, verify if it would be accepted, store, detect
    /// duplicates of our identity.
    fn receive(&mut self, info: ContactInfo, now_ms: u64, out: &mut Output) -> Received {
        if info.identity == self.own.identity && info.instance.id == self.own.instance.id {
            return Received::NotNewer; // our own record, echoed back
        }
        if info.genesis_hash != self.node.genesis_hash {
            return self.drop(DropReason::WrongCluster, &info, out);
        }
        if !crate::addressing::reachable_from(self.node.gossip_addr.ip(), info.gossip_addr.ip()) {
            return self.drop(DropReason::UnreachableAddress, &info, out);
        }
        let too_new = info.wallclock_ms > now_ms.saturating_add(self.cfg.max_clock_skew_ms);
        let too_old = now_ms.saturating_sub(info.wallclock_ms) > self.cfg.entry_ttl_ms;
        if too_new || too_old {
            return self.drop(DropReason::BadWallclock, &info, out);
        }
        if !self.table.is_newer(&info) {
            return Received::NotNewer; // a re-push of what we hold: no signature check
        }
        if info.verify().is_err() {
            return self.drop(DropReason::BadSignature, &info, out);
        }
        if let Err(reason) = self.table.insert(info.clone(), now_ms) {
            return self.drop(reason, &info, out);
        }
        bump(&self.stats.contact_infos_accepted);
        self.check_duplicate(&info, now_ms, out);
        Received::Accepted
    }

    fn drop(&self, reason: DropReason, info: &ContactInfo, out: &mut Output) -> Received {
        self.stats.record_drop(reason);
        out.dropped.push((reason, info.identity));
        Received::Dropped
    }

    fn check_duplicate(&mut self, info: &ContactInfo, now_ms: u64, out: &mut Output) {
        if info.identity != self.own.identity || info.instance.id == self.own.instance.id {
            return;
        }
        let recently_reported = self.last_duplicate.as_ref().is_some_and(|(inst, at)| {
            *inst == info.instance && now_ms.saturating_sub(*at) < self.cfg.duplicate_reemit_ms
        });
        if recently_reported {
            return;
        }
        self.last_duplicate = Some((info.instance.clone(), now_ms));
        bump(&self.stats.duplicate_instance_events);
        out.duplicates.push(DuplicateInstance {
            identity: info.identity,
            ours: self.own.instance.clone(),
            theirs: info.instance.clone(),
            their_gossip_addr: info.gossip_addr,
            their_wallclock_ms: info.wallclock_ms,
        });
    }

    /// Gossip addresses of known peers, without ours and without entrypoints.
    fn peer_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self
            .table
            .iter()
            .map(|ci| ci.gossip_addr)
            .filter(|a| *a != self.node.gossip_addr && !self.entrypoints.contains(a))
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    fn push_targets(&mut self) -> Vec<SocketAddr> {
        let mut peers = self.peer_addrs();
        // Partial Fisher-Yates: the first `fanout` entries become a random sample.
        let fanout = self.cfg.push_fanout.min(peers.len());
        for i in 0..fanout {
            let j = i + (self.rng.next() % (peers.len() - i) as u64) as usize;
            peers.swap(i, j);
        }
        peers.truncate(fanout);
        let mut targets = self.entrypoints.clone();
        targets.extend(peers);
        targets
    }

    fn pull_target(&mut self) -> Option<SocketAddr> {
        let mut candidates = self.entrypoints.clone();
        candidates.extend(self.peer_addrs());
        if candidates.is_empty() {
            return None;
        }
        let i = (self.rng.next() % candidates.len() as u64) as usize;
        Some(candidates[i])
    }
}

fn sign_own(keypair: &Keypair, node: &NodeInfo, now_ms: u64) -> Result<ContactInfo, EncodeError> {
    ContactInfo {
        identity: keypair.pubkey(),
        gossip_addr: node.gossip_addr,
        rpc_addr: node.rpc_addr,
        tpu_vote_addr: node.tpu_vote_addr,
        version: node.version.clone(),
        genesis_hash: node.genesis_hash,
        instance: node.instance.clone(),
        wallclock_ms: now_ms,
        signature: huione_keys::Signature([0; 64]),
    }
    .sign(keypair)
}
