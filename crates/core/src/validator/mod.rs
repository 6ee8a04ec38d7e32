//! [`Core`]: one validator's consensus state machine. Events and `now` in, commands out.
//!
//! The driver calls one method per event (`on_block`, `on_vote`, `on_store_report`,
//! `set_identity`, `on_announcement`, `on_repair_request`, `tick`) and executes the
//! returned [`Command`]s in order. The core reads no clock and does no I/O.

mod identity;
mod leader;
mod replay;
mod takeover;
mod voting;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use huione_keys::{Keypair, Pubkey, Signature};
use huione_tower::{Slot, Tower, TowerError};
use serde::{Deserialize, Serialize};

use crate::bank::Bank;
use crate::block::{Block, SigVerifier, SignedVote};
use crate::fence::{Fence, OutgoingVote, StoreTicket};
use crate::forks::ForkTree;
use crate::genesis::{Genesis, ScheduleCache};
use crate::hash::{sig_hex, Hash};

pub use identity::IdentityChange;
pub use takeover::{
    LockAfterFailure, LockHolder, StorageAnswer, StorageCall, StorageOp, StorageProblem, Switched,
    TakeoverError, TakeoverEvent, TakeoverReason, TakeoverRequest,
};
pub use voting::{VoteWithheld, WithheldRule};

/// Opaque peer address, assigned by the driver (used to answer repair requests).
pub type PeerId = u64;

/// Blocks that arrived before their parent, kept while the parent is repaired.
pub const MAX_ORPHANS: usize = 1024;
/// Gossip votes kept for inclusion in our blocks.
pub const MAX_VOTE_POOL: usize = 4096;
/// Rooted blocks kept for answering repair requests.
pub const MAX_ROOTED_BLOCKS: u64 = 1024;
/// Blocks returned for one repair request (the block and its ancestors).
pub const MAX_REPAIR_BATCH: usize = 16;
/// How far ahead of our clock a block's slot may be before it is dropped.
pub const MAX_FUTURE_SLOTS: u64 = 2;
/// Longest instance id accepted in an announcement.
pub const MAX_INSTANCE_ID_LEN: usize = 128;
/// The most one tick may advance the core's monotonic time (used for every timer): a
/// wall-clock step forwards moves a timer by at most this, a step backwards not at all.
pub const MAX_TICK_STEP_MS: u64 = 1_000;
/// Clock-offset samples kept (one per fresh block from another leader).
pub const CLOCK_SAMPLES: usize = 64;
/// Samples needed before the offset estimate is trusted.
pub const MIN_CLOCK_SAMPLES: usize = 4;
/// Samples older than this many slots (by our clock) are forgotten, so that an
/// estimate can never keep every leader from leading for good.
pub const CLOCK_SAMPLE_WINDOW_SLOTS: u64 = 64;
/// The claim length of towers saved before claims were stored (format version 1), for
/// the clock-based floor a taker falls back to when it loads such a tower.
pub const LEGACY_LEADER_FENCE_SLOTS: u64 = 8;

/// Planted bugs, for showing that the simulator and auditor catch real mistakes. Only
/// a core built with the `planted-bugs` feature (the simulator's tests, or `huione-sim
/// --features planted-bugs`) can plant one: the code that misbehaves is not compiled
/// into anything else, the release validator included.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Send each vote as soon as it is decided, before its tower is stored.
    SendBeforeStore,
    /// On an identity change, ignore the stored tower and start from an empty one.
    IgnoreStoredTower,
    /// On an identity change, ignore the stored leader claim and take the old clock-based
    /// floor `slot(now) + F + skew`: breaks "no slot led twice" when a clock runs ahead.
    FloorFromClock,
}

/// Settings of one core. Times in ms.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The vote account this node votes for when its identity is the account's node.
    pub vote_account: Pubkey,
    /// Keys that may sign votes (`--authorized-voter`).
    pub authorized_voters: Vec<Keypair>,
    /// This process's unique id, announced with the identity it runs.
    pub instance_id: String,
    /// F: a store issued in slot s claims the slots up to s + F; once confirmed, the node
    /// may lead them. The claim is stored in the tower, and a taker leads only above it.
    /// 1 by default: a taker after a crash just before the identity's leader window can
    /// lead from the window's second slot (with 2, from its third: about 1.0 s to the first
    /// vote at 400 ms slots). The safety argument does not depend on F; a smaller F only
    /// asks that the store renewing the claim (issued the slot before) confirm in time.
    pub leader_fence_slots: u64,
    /// A voter that has had no block, vote or repair request from any other validator for
    /// longer than this, while others hold stake, withholds its votes (rule `isolated`):
    /// they reach nobody, and votes on its own blocks only build lockouts on a fork no one
    /// else has, which whoever votes with this tower next (the standby after a failover,
    /// this node once healed) must wait out. In a healthy cluster some other validator's
    /// block or vote arrives every slot. 1.5 slots by default.
    pub peer_silence_limit_ms: u64,
    /// Extra slots a taker waits after `slot(now) + LEGACY_LEADER_FENCE_SLOTS` when the
    /// tower it loaded carries no claim (saved by a release before format version 2).
    pub fence_skew_slots: u64,
    /// The node neither leads nor raises its leader claim while its clock is estimated
    /// further than this from the cluster's (blocks of other leaders arriving early or
    /// late). Safety does not depend on it (claims come from storage); it keeps a node
    /// with a broken clock from producing blocks peers drop and from pushing a taker's
    /// floor far ahead.
    pub max_clock_offset_ms: u64,
    /// Delay before retrying a store that failed transiently.
    pub store_retry_ms: u64,
    /// Exit when stores keep failing this long (None: withhold votes forever).
    pub max_store_outage_ms: Option<u64>,
    pub announce_interval_ms: u64,
    /// How far into its slot a leader waits before producing (lets the parent arrive).
    pub produce_delay_ms: u64,
    /// Minimum gap between two repair requests for the same slot.
    pub repair_retry_ms: u64,
    /// Delay before a takeover retries a storage call that failed transiently.
    pub takeover_retry_ms: u64,
    /// A takeover holding the lock gives it up when the tower cannot be loaded for this
    /// long after the acquire (monotonic).
    pub takeover_finish_ms: u64,
    /// A restarted primary reclaims after this long even if it has not caught up.
    pub reclaim_catch_up_limit_ms: u64,
    #[cfg(feature = "planted-bugs")]
    #[doc(hidden)]
    pub planted_bug: Option<PlantedBug>,
}

impl CoreConfig {
    /// Defaults scaled to the genesis slot length.
    pub fn new(
        genesis: &Genesis,
        vote_account: Pubkey,
        authorized_voters: Vec<Keypair>,
        instance_id: String,
    ) -> Self {
        let slot_ms = genesis.slot_duration_ms;
        CoreConfig {
            vote_account,
            authorized_voters,
            instance_id,
            leader_fence_slots: 1,
            fence_skew_slots: 1,
            peer_silence_limit_ms: slot_ms + slot_ms / 2,
            max_clock_offset_ms: slot_ms,
            store_retry_ms: (slot_ms / 4).max(1),
            max_store_outage_ms: None,
            announce_interval_ms: slot_ms * 4,
            produce_delay_ms: slot_ms / 4,
            repair_retry_ms: (slot_ms / 2).max(1),
            takeover_retry_ms: (slot_ms / 4).clamp(1, 200),
            takeover_finish_ms: 5_000,
            reclaim_catch_up_limit_ms: 60_000,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }

    /// Plants `bug`; refused by a core built without the `planted-bugs` feature.
    #[doc(hidden)]
    pub fn plant_bug(&mut self, bug: PlantedBug) -> Result<(), PlantedBugsNotBuilt> {
        #[cfg(feature = "planted-bugs")]
        {
            self.planted_bug = Some(bug);
            Ok(())
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            let _ = bug;
            Err(PlantedBugsNotBuilt)
        }
    }

    /// Whether `bug` is planted (always false without the `planted-bugs` feature, so the
    /// misbehaving branch is compiled out).
    pub(crate) fn planted(&self, bug: PlantedBug) -> bool {
        #[cfg(feature = "planted-bugs")]
        {
            self.planted_bug == Some(bug)
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            let _ = bug;
            false
        }
    }
}

/// Whether this build of huione-core can plant bugs (the `planted-bugs` feature).
pub const PLANTED_BUGS_BUILT: bool = cfg!(feature = "planted-bugs");

/// A planted bug was asked of a core built without the `planted-bugs` feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this build has no planted bugs: rebuild with the planted-bugs feature (e.g. cargo run -p huione-sim --features planted-bugs)")]
pub struct PlantedBugsNotBuilt;

/// What the driver must do. Execute in order.
#[derive(Debug)]
pub enum Command {
    /// Store the ticket's tower under its fence, then report back with
    /// `StoreTicket::confirmed` / `failed` and [`Core::on_store_report`].
    StoreTower(StoreTicket),
    /// Send this vote to the cluster (its tower is durably stored).
    SendVote(OutgoingVote),
    /// Send this block (produced by us) to every peer.
    BroadcastBlock(Block),
    /// Ask some peer for the block (`slot`, `hash`) and its ancestors.
    RequestRepair { slot: Slot, hash: Hash },
    /// Answer a repair request.
    SendRepair { to: PeerId, blocks: Vec<Block> },
    /// Gossip our instance announcement.
    Announce(InstanceAnnouncement),
    /// Stop the process. The core has already stopped voting and producing.
    Exit(ExitReason),
    /// Run this tower-storage call for a takeover and answer with
    /// [`Core::on_storage_answer`].
    Storage(StorageCall),
    /// How a takeover goes: log it, and answer whoever asked (by takeover id). A
    /// `Switched` comes before the switch's own commands: install the lease for its
    /// revision and the new gossip identity first.
    Takeover(TakeoverEvent),
}

/// Why the core stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExitReason {
    #[error("lost the tower lock, another instance took this identity: {0}")]
    LockLost(String),
    #[error("another, newer instance ({other}) runs identity {identity}; the older one exits")]
    DuplicateInstance { identity: Pubkey, other: String },
    #[error("tower storage failed for {outage_ms} ms, over the configured limit")]
    StorageOutage { outage_ms: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Errors of calls that need an answer (set-identity).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("the stored tower cannot be used: {0}")]
    BadTower(#[from] TowerError),
    #[error("the lock is for identity {fence}, but the keypair is {keypair}")]
    FenceMismatch { fence: Pubkey, keypair: Pubkey },
    #[error("vote account {0} does not exist in this cluster; check --vote-account")]
    UnknownVoteAccount(Pubkey),
    #[error(
        "vote account {vote_account} votes for node {node}, not {identity}; this identity \
         cannot vote with it"
    )]
    NotThisNodesAccount {
        vote_account: Pubkey,
        node: Pubkey,
        identity: Pubkey,
    },
    #[error("no authorized voter keypair for {0}; pass it with --authorized-voter")]
    NoAuthorizedVoter(Pubkey),
    #[error("the core has exited ({0}); restart the process")]
    Halted(ExitReason),
    #[error("a takeover of {0} is in progress; retry when it has finished")]
    TakeoverInProgress(Pubkey),
    #[error(
        "this node cannot record votes and blocks in its ledger (its disk is full or \
         failing: see its log and getHealth), so it takes no identity it could not vote \
         for; free space on the ledger's disk and retry"
    )]
    CannotRecord,
}

/// Signed "identity X is run by instance I, which took it under lock revision R at T".
/// Gossiped; when two instances run one identity the older (lower revision, then earlier
/// time) exits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceAnnouncement {
    pub identity: Pubkey,
    pub instance_id: String,
    pub fence_revision: i64,
    pub since_ms: u64,
    #[serde(with = "sig_hex")]
    pub signature: Signature,
}

impl InstanceAnnouncement {
    pub fn sign(
        identity: &Keypair,
        instance_id: String,
        fence_revision: i64,
        since_ms: u64,
    ) -> Self {
        Self::sign_with(
            &crate::block::Ed25519Verifier,
            identity,
            instance_id,
            fence_revision,
            since_ms,
        )
    }
    /// [`InstanceAnnouncement::sign`] through `signer` (see [`SigVerifier::sign`]).
    pub fn sign_with(
        signer: &dyn SigVerifier,
        identity: &Keypair,
        instance_id: String,
        fence_revision: i64,
        since_ms: u64,
    ) -> Self {
        let mut a = InstanceAnnouncement {
            identity: identity.pubkey(),
            instance_id,
            fence_revision,
            since_ms,
            signature: Signature([0; 64]),
        };
        a.signature = signer.sign(identity, &a.message());
        a
    }
    fn message(&self) -> Vec<u8> {
        let mut m = b"huione-instance".to_vec();
        m.extend_from_slice(self.identity.as_bytes());
        m.extend_from_slice(&self.fence_revision.to_le_bytes());
        m.extend_from_slice(&self.since_ms.to_le_bytes());
        m.extend_from_slice(self.instance_id.as_bytes());
        m
    }
    /// Which of two instances is newer: higher lock revision, then later start, then id.
    fn rank(&self) -> (i64, u64, &str) {
        (self.fence_revision, self.since_ms, &self.instance_id)
    }
}

/// Counters for metrics and tests. Every dropped input is counted here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub blocks_replayed: u64,
    pub blocks_dropped: u64,
    pub duplicate_blocks_seen: u64,
    pub orphans_dropped: u64,
    pub votes_applied: u64,
    pub votes_rejected: u64,
    pub gossip_votes_dropped: u64,
    pub announcements_dropped: u64,
    pub votes_decided: u64,
    pub votes_sent: u64,
    pub locked_out: u64,
    pub threshold_failed: u64,
    pub switch_failed: u64,
    /// Votes withheld because no other validator had been heard from recently.
    pub isolated_withheld: u64,
    /// Votes withheld because the driver cannot record our votes and blocks
    /// ([`Core::set_recording`]).
    pub unrecordable_withheld: u64,
    pub store_failures: u64,
    pub stale_store_reports: u64,
    pub blocks_produced: u64,
    pub leader_slots_fenced: u64,
    pub roots_set: u64,
    /// Why the tower rules keep the node from voting now (None: voting, or nothing new
    /// to vote on).
    pub withheld: Option<VoteWithheld>,
}

/// A snapshot of the core's view, for RPC and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub identity: Pubkey,
    pub voting: bool,
    pub halted: Option<ExitReason>,
    pub root: Slot,
    pub best_slot: Slot,
    pub last_voted_slot: Option<Slot>,
    pub optimistic_slot: Slot,
    pub fence: Option<Fence>,
    /// Highest slot this node may lead by its confirmed stores.
    pub leader_claim: Option<Slot>,
    /// It leads only slots above this (None when not voting).
    pub leader_floor: Option<Slot>,
    pub vote_landed: bool,
    /// Lost the identity and finishing the leader slots its confirmed claim covers.
    pub stepping_down: bool,
    /// Estimated offset of our clock from the cluster's, in ms (positive: ahead), from
    /// the arrival of other leaders' blocks. None until enough blocks arrived.
    pub clock_offset_ms: Option<i64>,
}

/// What a restarted process finds on disk: the root bank and the blocks after it.
#[derive(Clone, Debug)]
pub struct Ledger {
    pub root_bank: Bank,
    pub rooted_chain: std::collections::BTreeSet<Slot>,
    pub blocks: Vec<Block>,
}

/// Where a store stands. Exactly one store is outstanding at a time; a vote is decided
/// only when none is, so a vote's tower is always the last one stored.
#[derive(Debug)]
enum StoreState {
    Idle,
    InFlight {
        seq: u64,
        vote: Option<SignedVote>,
        /// When the store was issued (monotonic, `Core::mono_ms`): an outage is timed
        /// from the first failed store's issue.
        issued_ms: u64,
    },
    Retry {
        /// Due at this monotonic time (`Core::mono_ms`).
        at_ms: u64,
        vote: Option<SignedVote>,
    },
}

/// State held only while voting under a fence.
#[derive(Debug)]
struct Voter {
    fence: Fence,
    tower: Tower,
    voter_key: Keypair,
    since_ms: u64,
    store: StoreState,
    /// Highest slot our confirmed stores let us lead.
    claim: Option<Slot>,
    /// We lead only slots above this.
    floor: Slot,
    first_new_vote: Option<Slot>,
    vote_landed: bool,
    outage_since_ms: Option<u64>,
    /// Set by a takeover: record "finished" after the first confirmed store.
    finish_mark: Option<takeover::FinishMark>,
}

/// A node that lost its identity (lock lost, or a newer instance announced itself) but
/// still holds a confirmed claim on upcoming leader slots: it votes no more, produces
/// only the slots its claim covers (the next holder starts above the claim it stored),
/// then exits. This is what keeps a planned handover inside a leader window from
/// skipping slots.
#[derive(Debug)]
struct SteppingDown {
    reason: ExitReason,
    floor: Slot,
    claim: Slot,
    vote_landed: bool,
}

#[derive(Debug)]
enum Role {
    Observer,
    Voting(Box<Voter>),
    SteppingDown(Box<SteppingDown>),
    Halted(ExitReason),
}

/// One validator's consensus logic.
pub struct Core {
    genesis: Arc<Genesis>,
    cfg: CoreConfig,
    verifier: Arc<dyn SigVerifier>,
    schedule: ScheduleCache,
    stakes: HashMap<Pubkey, u64>,
    total_stake: u64,
    forks: ForkTree,
    identity: Keypair,
    role: Role,
    blockstore: BTreeMap<Slot, Block>,
    orphans: BTreeMap<Slot, Block>,
    repair_asked_ms: HashMap<Slot, u64>,
    vote_pool: BTreeMap<(Pubkey, Slot), SignedVote>,
    produced: BTreeMap<Slot, Hash>,
    next_seq: u64,
    last_announce_ms: u64,
    optimistic_slot: Slot,
    stats: Stats,
    outbox: Vec<Command>,
    /// Recent fresh blocks of other leaders (leader, arrival time, arrival minus
    /// expected production time, and the tick gap epoch it was taken in).
    clock_samples: std::collections::VecDeque<ClockSample>,
    /// Counts the tick gaps seen (pauses, clock steps): samples of an older epoch are used
    /// only while the current one has too few.
    clock_epoch: u64,
    /// The last tick, to notice a process that was paused (SIGSTOP, VM freeze).
    last_tick_ms: Option<u64>,
    /// Monotonic time for timers (retries, the storage-outage limit): the sum of the
    /// steps between ticks, each clamped to `0..=MAX_TICK_STEP_MS`. Only slot timing
    /// follows the wall clock.
    mono_ms: u64,
    /// The identity takeover in progress (at most one).
    takeover: Option<Box<takeover::Takeover>>,
    next_takeover_id: u64,
    next_storage_call: u64,
    last_acquire_tag: u64,
    /// "Finished" records in flight: (storage call, takeover id, fence).
    finishing: Vec<(u64, u64, Fence)>,
    pending_reclaim: Option<takeover::PendingReclaim>,
    reclaim_gate: bool,
    /// When a block, vote or repair request from another validator last arrived.
    last_peer_ms: Option<u64>,
    /// Whether the driver can record our votes and blocks ([`Core::set_recording`]).
    recording: bool,
    /// The highest-ranked announcement of a rival instance of our identity, heard while
    /// our own acquire of it may have been applied: judged once that takeover has ended
    /// (see `Core::on_announcement`).
    rival: Option<InstanceAnnouncement>,
}

/// One clock-offset sample: a fresh block of another leader.
#[derive(Clone, Copy, Debug)]
struct ClockSample {
    leader: Pubkey,
    /// Arrival, by our clock.
    at_ms: u64,
    /// Arrival minus the block's expected production time.
    offset_ms: i64,
    epoch: u64,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("status", &self.status())
            .finish()
    }
}

impl Core {
    /// A core that observes (replays, repairs) as `identity` and does not vote until
    /// [`Core::set_identity`] gives it a lock. `ledger` resumes from disk after a restart.
    pub fn new(
        genesis: Arc<Genesis>,
        cfg: CoreConfig,
        identity: Keypair,
        verifier: Arc<dyn SigVerifier>,
        ledger: Option<Ledger>,
        now_ms: u64,
    ) -> Self {
        let stakes: HashMap<Pubkey, u64> = genesis
            .validators
            .iter()
            .map(|v| (v.vote_account, v.stake))
            .collect();
        let (root_bank, rooted_chain, blocks) = match ledger {
            Some(l) => (l.root_bank, l.rooted_chain, l.blocks),
            None => (Bank::genesis(&genesis), Default::default(), Vec::new()),
        };
        let forks = ForkTree::new(root_bank, rooted_chain, stakes.clone());
        let mut core = Core {
            total_stake: genesis.total_stake(),
            genesis,
            cfg,
            verifier,
            schedule: ScheduleCache::default(),
            stakes,
            forks,
            identity,
            role: Role::Observer,
            blockstore: BTreeMap::new(),
            orphans: BTreeMap::new(),
            repair_asked_ms: HashMap::new(),
            vote_pool: BTreeMap::new(),
            produced: BTreeMap::new(),
            next_seq: 0,
            last_announce_ms: 0,
            optimistic_slot: 0,
            stats: Stats::default(),
            outbox: Vec::new(),
            clock_samples: Default::default(),
            clock_epoch: 0,
            last_tick_ms: None,
            mono_ms: 0,
            takeover: None,
            next_takeover_id: 0,
            next_storage_call: 0,
            last_acquire_tag: 0,
            finishing: Vec::new(),
            pending_reclaim: None,
            rival: None,
            last_peer_ms: None,
            reclaim_gate: true,
            recording: true,
        };
        core.restore_blocks(blocks, now_ms);
        core
    }

    fn restore_blocks(&mut self, blocks: Vec<Block>, now_ms: u64) {
        let root = self.forks.root();
        for b in blocks {
            if b.slot <= root {
                self.blockstore.insert(b.slot, b);
            } else {
                self.receive_block(now_ms, b, false);
            }
        }
        // Replaying our own ledger must not make us send anything, nor count as blocks
        // arriving late.
        self.outbox.clear();
        self.clock_samples.clear();
    }

    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }
    pub fn identity(&self) -> Pubkey {
        self.identity.pubkey()
    }
    /// The keypair of the identity the core runs (for the driver's gossip identity).
    pub fn identity_keypair(&self) -> &Keypair {
        &self.identity
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    pub fn instance_id(&self) -> &str {
        &self.cfg.instance_id
    }
    pub fn is_halted(&self) -> bool {
        matches!(self.role, Role::Halted(_))
    }

    /// The durable part of our state, as a restarted process would find it on disk.
    pub fn ledger(&self) -> Ledger {
        Ledger {
            root_bank: self.forks.root_bank().clone(),
            rooted_chain: self.forks.rooted_chain().clone(),
            blocks: self.blockstore.values().cloned().collect(),
        }
    }

    /// The rooted slots remembered below the root (for a ledger snapshot).
    pub fn rooted_chain(&self) -> &std::collections::BTreeSet<Slot> {
        self.forks.rooted_chain()
    }

    /// The blocks kept: rooted ones (for repair) and those above the root, by slot.
    pub fn blocks(&self) -> impl Iterator<Item = &Block> + '_ {
        self.blockstore.values()
    }

    /// Replayed within a few slots of the clock.
    pub fn caught_up(&self, now_ms: u64) -> bool {
        let best = self.best_slot();
        best + 2 * crate::genesis::LEADER_SLOTS >= self.genesis.slot_at(now_ms)
    }

    pub fn status(&self) -> Status {
        let voter = match &self.role {
            Role::Voting(v) => Some(v),
            _ => None,
        };
        Status {
            identity: self.identity.pubkey(),
            voting: voter.is_some(),
            halted: match &self.role {
                Role::Halted(r) => Some(r.clone()),
                _ => None,
            },
            root: self.forks.root(),
            best_slot: self.best_slot(),
            last_voted_slot: voter.and_then(|v| v.tower.last_voted_slot()),
            optimistic_slot: self.optimistic_slot,
            fence: voter.map(|v| v.fence),
            leader_claim: voter.and_then(|v| v.claim),
            leader_floor: voter.map(|v| v.floor),
            vote_landed: voter.is_some_and(|v| v.vote_landed),
            stepping_down: matches!(self.role, Role::SteppingDown(_)),
            clock_offset_ms: self.clock_offset_ms(),
        }
    }

    /// Our tower (None unless voting).
    /// The bank (vote accounts) of a replayed slot still in the fork tree.
    pub fn bank(&self, slot: Slot) -> Option<&Bank> {
        self.forks.bank(slot)
    }

    pub fn tower(&self) -> Option<&Tower> {
        match &self.role {
            Role::Voting(v) => Some(&v.tower),
            _ => None,
        }
    }

    /// Slots in the fork tree, ascending (for tests and monitoring).
    pub fn fork_slots(&self) -> Vec<Slot> {
        self.forks.slots()
    }

    /// Fork-choice state for debugging: (vote account, latest vote slot) and subtree weights.
    #[doc(hidden)]
    pub fn debug_fork_choice(&self) -> String {
        let w = self.forks.fork_choice().weights.clone();
        let mut latest: Vec<_> = self
            .stakes
            .keys()
            .map(|k| (self.stakes[k], self.forks.latest_vote(k).map(|(s, _)| s)))
            .collect();
        latest.sort();
        let mut w: Vec<_> = w.into_iter().filter(|(_, v)| *v > 0).collect();
        w.sort();
        format!(
            "latest (stake, slot): {latest:?}\nweights: {w:?}\n{:?}",
            self.stats
        )
    }

    /// After a gap of more than two slots between ticks (the process was paused, or the
    /// clock stepped), a claim confirmed before the gap is not trusted to lead with: a
    /// new confirmed store must renew it first, which also finds a lost lock before any
    /// block is produced. A stepping-down node exits at once.
    fn notice_pause(&mut self, now_ms: u64) {
        if let Some(last) = self.last_tick_ms {
            self.mono_ms += now_ms.saturating_sub(last).min(MAX_TICK_STEP_MS);
        }
        let gap_limit = 2 * self.genesis.slot_duration_ms;
        let paused = self
            .last_tick_ms
            .is_some_and(|last| now_ms.abs_diff(last) > gap_limit);
        self.last_tick_ms = Some(now_ms);
        if !paused {
            return;
        }
        // A gap is a pause (the clock is as good as before; blocks buffered meanwhile
        // arrive late, which the per-leader minimum ignores) or a clock step (every
        // earlier sample is off by the step). Which, the core cannot tell: measure
        // afresh, but keep the earlier estimate until the new epoch has enough samples,
        // so a busy machine's scheduling gaps do not blind it (it would lead while
        // "unknown").
        self.clock_epoch += 1;
        match &mut self.role {
            Role::Voting(v) => v.claim = None,
            Role::SteppingDown(s) => {
                let reason = s.reason.clone();
                self.halt(reason);
            }
            _ => {}
        }
    }

    /// Our clock's offset from the cluster's (positive: ahead), from recent blocks.
    ///
    /// A sample is arrival minus expected production time: our offset, minus the
    /// leader's, plus the network delay, which is never negative. So each leader's
    /// smallest recent sample is the tightest estimate against that leader's clock (a
    /// late block, a repair, a backlog after a freeze only add delay), and the median
    /// over leaders is robust to a minority of leaders with broken clocks.
    pub fn clock_offset_ms(&self) -> Option<i64> {
        // The newest epoch with enough samples: epochs only grow, so each epoch's samples
        // are one run of the queue, counted from the back in one pass.
        let mut run = (u64::MAX, 0);
        let epoch = self.clock_samples.iter().rev().find_map(|s| {
            run = if s.epoch == run.0 {
                (run.0, run.1 + 1)
            } else {
                (s.epoch, 1)
            };
            (run.1 >= MIN_CLOCK_SAMPLES).then_some(s.epoch)
        })?;
        let mut per_leader: HashMap<Pubkey, i64> = HashMap::new();
        for s in self.clock_samples.iter().filter(|s| s.epoch == epoch) {
            let m = per_leader.entry(s.leader).or_insert(s.offset_ms);
            *m = (*m).min(s.offset_ms);
        }
        // The lower median by size: with two leaders, the one that agrees better with us
        // (a wrong "our clock is off" costs leader slots, so it needs a majority).
        let mut v: Vec<i64> = per_leader.into_values().collect();
        v.sort_unstable_by_key(|x| x.unsigned_abs());
        Some(v[(v.len() - 1) / 2])
    }

    /// Something arrived from another validator.
    pub(super) fn heard_peer(&mut self, now_ms: u64) {
        self.last_peer_ms = Some(self.last_peer_ms.map_or(now_ms, |t| t.max(now_ms)));
    }

    /// Heard from no other validator for longer than `peer_silence_limit_ms`, while others
    /// hold stake (never before the first message: a cluster has to start).
    pub(super) fn isolated(&self, now_ms: u64) -> bool {
        let ours = self
            .stakes
            .get(&self.cfg.vote_account)
            .copied()
            .unwrap_or(0);
        self.total_stake > ours
            && self
                .last_peer_ms
                .is_some_and(|t| now_ms.saturating_sub(t) > self.cfg.peer_silence_limit_ms)
    }

    /// The driver says whether it can record our votes and blocks (the daemon: its audit
    /// log and block store take writes; true until told otherwise). While it cannot, the
    /// core decides no vote (rule `unrecordable`, counted in
    /// [`Stats::unrecordable_withheld`]), produces no block (each leader slot passing
    /// meanwhile is fenced, counted and never produced late) and renews no leader claim;
    /// told it can again, it votes and leads from its next tick. Nor does it take an
    /// identity meanwhile: `begin_takeover` is refused ([`CoreError::CannotRecord`]) and a
    /// pending reclaim waits (a restarted primary on a full disk would otherwise reclaim
    /// from the standby and then vote for nobody).
    ///
    /// Why: a driver sends nothing it could not record, so the blocks we would produce
    /// never leave, and votes decided on them would build lockouts on a fork nobody else
    /// has — stored in the tower that the standby taking over (or this node once its disk
    /// is freed) loads and must wait out. A renewed claim would only raise a taker's
    /// floor over slots we cannot lead.
    ///
    /// Safety: this rule only withholds. It never makes the core vote, store, send or
    /// produce anything it would not otherwise; every vote it still decides (none while
    /// recording fails) passes the same tower checks and the same store-before-send path,
    /// and a vote decided before the driver noticed (a store in flight) is stored and may
    /// stay unsent, which is safe: a stored vote that never left only adds lockouts the
    /// next holder respects. Fencing, claims and floors are untouched.
    pub fn set_recording(&mut self, ok: bool) {
        self.recording = ok;
    }

    /// Whether the driver last said it can record our votes and blocks.
    pub fn recording(&self) -> bool {
        self.recording
    }

    /// Whether a block or gossip vote for `slot` is too far in the future to accept: more
    /// than `MAX_FUTURE_SLOTS` past our clock's slot, plus however far our clock is
    /// measured to run *behind* the cluster (only estimated for a slot past the plain
    /// bound, so the common case costs nothing). A node whose clock was stepped back
    /// keeps replaying and voting (the slot numbers its votes carry do not depend on its
    /// clock); its own leader slots are what a bad clock must stop, and `clock_ok` does.
    /// Without this, such a node dropped every block as "from the future" and sent no
    /// vote until its clock was fixed. The estimate is a lower median over leaders, so
    /// one leader producing early cannot widen it.
    pub(super) fn too_far_ahead(&self, now_ms: u64, slot: Slot) -> bool {
        let limit = self.genesis.slot_at(now_ms) + MAX_FUTURE_SLOTS;
        if slot <= limit {
            return false;
        }
        let behind_ms = self
            .clock_offset_ms()
            .filter(|o| *o < 0)
            .map_or(0, i64::unsigned_abs);
        slot > limit + behind_ms.div_ceil(self.genesis.slot_duration_ms)
    }

    /// Whether our clock is within `max_clock_offset_ms` of the cluster's (unknown = yes).
    fn clock_ok(&self) -> bool {
        self.clock_offset_ms()
            .is_none_or(|o| o.unsigned_abs() <= self.cfg.max_clock_offset_ms)
    }

    /// A fresh block of another leader arrived at `now_ms`: one clock-offset sample.
    fn sample_clock(&mut self, now_ms: u64, slot: Slot, leader: Pubkey) {
        let expected = self.genesis.slot_start_ms(slot) + self.cfg.produce_delay_ms;
        if self.clock_samples.len() == CLOCK_SAMPLES {
            self.clock_samples.pop_front();
        }
        self.clock_samples.push_back(ClockSample {
            leader,
            at_ms: now_ms,
            offset_ms: now_ms as i64 - expected as i64,
            epoch: self.clock_epoch,
        });
    }

    /// Forgets samples older than [`CLOCK_SAMPLE_WINDOW_SLOTS`] (or from the future,
    /// after our clock stepped back).
    fn expire_clock_samples(&mut self, now_ms: u64) {
        let window_ms = CLOCK_SAMPLE_WINDOW_SLOTS * self.genesis.slot_duration_ms;
        self.clock_samples
            .retain(|s| now_ms.abs_diff(s.at_ms) <= window_ms);
    }

    fn best_slot(&self) -> Slot {
        self.forks.fork_choice().best
    }

    fn take_outbox(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.outbox)
    }

    /// Gives up the identity: if a confirmed claim still covers one of our leader slots
    /// from now on, step down (produce those, then exit); otherwise halt at once.
    fn step_down(&mut self, now_ms: u64, reason: ExitReason) {
        let now_slot = self.genesis.slot_at(now_ms);
        let me = self.identity.pubkey();
        let rights = match &self.role {
            Role::Voting(v) => v.claim.map(|c| (v.floor, c, v.vote_landed)),
            _ => None,
        };
        let leads_within_claim = rights.is_some_and(|(floor, claim, _)| {
            (now_slot.max(floor + 1)..=claim)
                .any(|s| self.schedule.leader_at(&self.genesis, s) == me)
        });
        match rights {
            Some((floor, claim, vote_landed)) if leads_within_claim => {
                self.role = Role::SteppingDown(Box::new(SteppingDown {
                    reason,
                    floor,
                    claim,
                    vote_landed,
                }));
            }
            _ => self.halt(reason),
        }
    }

    /// Ends a step-down once its claim is behind us.
    fn finish_step_down(&mut self, now_ms: u64) {
        if let Role::SteppingDown(s) = &self.role {
            if self.genesis.slot_at(now_ms) > s.claim {
                let reason = s.reason.clone();
                self.halt(reason);
            }
        }
    }

    /// Stops voting and producing for good, and tells the driver to exit.
    fn halt(&mut self, reason: ExitReason) {
        if self.is_halted() {
            return;
        }
        self.role = Role::Halted(reason.clone());
        self.outbox.push(Command::Exit(reason));
    }

    /// Time passes: retries, leader duties, announcements.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Command> {
        if self.is_halted() {
            return Vec::new();
        }
        self.notice_pause(now_ms);
        self.expire_clock_samples(now_ms);
        self.finish_step_down(now_ms);
        if self.is_halted() {
            return self.take_outbox();
        }
        self.check_store_outage();
        if self.is_halted() {
            return self.take_outbox();
        }
        self.retry_store(now_ms);
        self.drive_takeover(now_ms);
        self.settle_rival(now_ms);
        self.renew_leader_claim(now_ms);
        self.after_change(now_ms);
        self.maybe_produce(now_ms);
        self.maybe_announce(now_ms);
        self.retry_repairs(now_ms);
        self.take_outbox()
    }
}

#[cfg(test)]
mod takeover_tests;
#[cfg(test)]
mod tests;
