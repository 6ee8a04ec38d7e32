//! The simulated world: machines, the event queue, simulated time, and the run loop.

use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use huione_core::audit::Auditor;
use huione_core::{
    Block, Core, CoreConfig, ExitReason, Genesis, GenesisValidator, InstanceAnnouncement, Ledger,
    SignedVote, Slot, StorageAnswer, StoreReport, StoreTicket, TakeoverEvent,
};
use huione_keys::{Keypair, Pubkey};
use huione_tower_storage::{Lease, LockOwner, MemoryTowerStorage};

use crate::config::SimConfig;
use crate::report::{SimFailure, SimReport};
use crate::rng::Rng;
use crate::verifier::CachedVerifier;

pub type MachineId = usize;

/// Messages buffered for a frozen machine before newer ones are dropped.
/// How far the root must advance after the heal for the liveness check to pass.
pub const LIVENESS_ROOT_ADVANCE: Slot = 16;

pub(crate) const MAX_FROZEN_INBOX: usize = 20_000;

/// Whether a machine is a validator's primary or its standby.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineKind {
    Primary,
    Standby,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineState {
    Running,
    /// Paused: no ticks, messages buffered; resumes at `until_ms`.
    Frozen {
        until_ms: u64,
    },
    /// Crashed or exited; restarts at `restart_at_ms` (None: stays down until told).
    Down {
        restart_at_ms: Option<u64>,
    },
}

/// What crosses the simulated network (or comes back from storage).
#[derive(Debug)]
pub(crate) enum Msg {
    Block(Block),
    Blocks(Vec<Block>),
    Vote(SignedVote),
    Announce(InstanceAnnouncement),
    RepairRequest {
        from: MachineId,
        slot: Slot,
        hash: huione_core::Hash,
    },
    StoreResult {
        incarnation: u64,
        report: StoreReport,
    },
    /// A takeover storage call's answer that comes late (a timeout).
    StorageAnswer {
        incarnation: u64,
        call: u64,
        answer: StorageAnswer,
    },
}

impl Msg {
    /// Sent by another node (not storage's answer to this one).
    pub(crate) fn is_from_peer(&self) -> bool {
        !matches!(self, Msg::StoreResult { .. } | Msg::StorageAnswer { .. })
    }
}

#[derive(Debug)]
pub(crate) enum Item {
    Deliver {
        to: MachineId,
        msg: Msg,
    },
    /// A store request reaches the storage.
    StoreExec {
        machine: MachineId,
        incarnation: u64,
        ticket: StoreTicket,
    },
    /// An acquire whose caller timed out reaches storage late.
    LateAcquire {
        identity: Pubkey,
        owner: LockOwner,
        seen: i64,
    },
}

/// A queue entry: when, the tie-break, and where its item waits in [`EventQueue`]'s slab
/// (items are a few hundred bytes; the heap moves only these 24).
pub(crate) struct Queued {
    pub at_ms: u64,
    pub seq: u64,
    slot: usize,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at_ms, self.seq) == (o.at_ms, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at_ms, o.seq).cmp(&(self.at_ms, self.seq))
    }
}

/// Items by (time, then the order they were queued in), earliest first.
#[derive(Default)]
pub(crate) struct EventQueue {
    heap: BinaryHeap<Queued>,
    items: Vec<Option<Item>>,
    free: Vec<usize>,
}

impl EventQueue {
    fn push(&mut self, at_ms: u64, seq: u64, item: Item) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.items[slot] = Some(item);
                slot
            }
            None => {
                self.items.push(Some(item));
                self.items.len() - 1
            }
        };
        self.heap.push(Queued { at_ms, seq, slot });
    }

    /// The earliest item if it is due at or before `until_ms`.
    fn pop_due(&mut self, until_ms: u64) -> Option<(u64, Item)> {
        if self.heap.peek().is_none_or(|q| q.at_ms > until_ms) {
            return None;
        }
        let q = self.heap.pop().expect("peeked");
        self.free.push(q.slot);
        let item = self.items[q.slot]
            .take()
            .expect("queued items are in the slab");
        Some((q.at_ms, item))
    }
}

/// Per-machine counters, for scenario assertions.
#[derive(Clone, Debug, Default)]
pub struct MachineStats {
    pub votes_sent: u64,
    pub blocks_produced: u64,
    pub last_vote_sent_ms: Option<u64>,
    pub exits: Vec<(u64, ExitReason)>,
    pub takeovers: u64,
    /// Takeovers that finished after their acquire's answer was lost (adopted).
    pub takeovers_adopted: u64,
    /// Takeovers that gave the lock up (fenced release).
    pub takeovers_released: u64,
    pub stores_ok: u64,
    pub stores_lock_lost: u64,
    pub stores_unavailable: u64,
}

/// One simulated machine (process + its disk).
pub struct Machine {
    pub id: MachineId,
    pub kind: MachineKind,
    pub validator: usize,
    /// The identity it starts with (the validator's for a primary, its own for a standby).
    pub(crate) own: Keypair,
    /// The validator's identity keypair (also the authorized voter), on both machines.
    pub(crate) validator_identity: Keypair,
    pub(crate) vote_account: Pubkey,
    pub state: MachineState,
    pub(crate) core: Option<Core>,
    pub incarnation: u64,
    pub(crate) leases: HashMap<i64, Lease>,
    pub(crate) disk: Option<Ledger>,
    pub(crate) frozen_inbox: Vec<(u64, Msg)>,
    /// The last takeover events of the current process (bounded), for scenarios.
    pub takeover_events: Vec<TakeoverEvent>,
    /// The last answer a takeover gave: (takeover id, Ok or the error).
    pub(crate) takeover_answer: Option<(u64, Result<(), String>)>,
    /// An acquire was applied for this process, and no tower load has succeeded since.
    pub(crate) acquired_recently: bool,
    pub(crate) group: u8,
    pub(crate) storage_cut: bool,
    /// The last vote in the tower of the last successful store by the current
    /// incarnation (the driver's own check of invariant 1, independent of clocks).
    pub(crate) last_stored_vote: Option<Slot>,
    /// Since when (true time) this process's stores have been failing (None: the last
    /// one succeeded); the daemon's `getHealth` reports it unhealthy after two slots.
    pub(crate) store_failing_since_ms: Option<u64>,
    /// Its gossip table and last peer message, as its RPC would report them.
    pub(crate) peers: crate::watchtower::PeerView,
    /// How far this machine's wall clock is from true time (ms; positive: ahead). Its
    /// core sees `now + offset`; the network and storage run on true time.
    pub clock_offset_ms: i64,
    pub stats: MachineStats,
}

impl Machine {
    pub fn instance_id(&self) -> String {
        let kind = match self.kind {
            MachineKind::Primary => "primary",
            MachineKind::Standby => "standby",
        };
        format!("v{}-{}-{}", self.validator, kind, self.incarnation)
    }
    pub fn core(&self) -> Option<&Core> {
        self.core.as_ref()
    }
    /// When a down machine restarts (None: running, frozen, or down for good).
    pub fn down_until(&self) -> Option<u64> {
        match self.state {
            MachineState::Down { restart_at_ms } => restart_at_ms,
            _ => None,
        }
    }
}

/// The whole simulated cluster.
pub struct Sim {
    pub cfg: SimConfig,
    pub(crate) rng: Rng,
    pub now_ms: u64,
    pub(crate) queue: EventQueue,
    pub(crate) seq: u64,
    pub machines: Vec<Machine>,
    pub storage: MemoryTowerStorage,
    pub genesis: Arc<Genesis>,
    pub(crate) verifier: Arc<CachedVerifier>,
    pub auditor: Auditor,
    pub(crate) failure: Option<SimFailure>,
    pub(crate) faults: crate::faults::FaultState,
    pub report: SimReport,
    /// Every vote sent, for scenario assertions.
    pub vote_log: Vec<SentVote>,
    /// Every block produced: (true time, machine, slot), for scenario assertions.
    pub block_log: Vec<(u64, MachineId, Slot)>,
    /// Per validator: since when its lock has been held by a running process that reaches
    /// storage but does not vote under it (the half-finished-takeover check).
    pub(crate) idle_lock_since_ms: Vec<Option<u64>>,
    /// One watchtower per validator with a standby (validator `i` at index `i`).
    pub watchtowers: Vec<crate::watchtower::SimWatchtower>,
    /// When the processes next push their gossip contact info.
    pub(crate) next_gossip_ms: u64,
}

/// One vote as it left a machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentVote {
    pub sent_ms: u64,
    pub machine: MachineId,
    pub vote_account: Pubkey,
    pub slot: Slot,
    /// When the core decided the vote (before its store).
    pub decided_ms: u64,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        if cfg.planted_bug.is_some() && !huione_core::PLANTED_BUGS_BUILT {
            panic!("{}", huione_core::PlantedBugsNotBuilt);
        }
        if let Some(stakes) = &cfg.stakes {
            assert_eq!(stakes.len(), cfg.validators, "one stake per validator");
        }
        let mut rng = Rng::new(cfg.seed);
        let ids: Vec<Keypair> = (0..cfg.validators).map(|i| key(1, i)).collect();
        let validators = ids
            .iter()
            .enumerate()
            .map(|(i, id)| GenesisValidator {
                identity: id.pubkey(),
                vote_account: vote_account(i),
                authorized_voter: id.pubkey(),
                stake: match &cfg.stakes {
                    Some(stakes) => stakes[i],
                    None => 100 * rng.range(1, 3),
                },
            })
            .collect();
        let genesis = Arc::new(
            Genesis::new(validators, cfg.slot_ms, cfg.slots_per_epoch, 0)
                .expect("valid sim genesis"),
        );
        let mut machines = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            machines.push(new_machine(
                machines.len(),
                MachineKind::Primary,
                i,
                id.clone(),
                id.clone(),
            ));
        }
        for (i, id) in ids.iter().enumerate().take(cfg.standbys) {
            machines.push(new_machine(
                machines.len(),
                MachineKind::Standby,
                i,
                key(2, i),
                id.clone(),
            ));
        }
        let mut sim = Sim {
            auditor: Auditor::new(genesis.hash),
            rng,
            now_ms: 0,
            queue: EventQueue::default(),
            seq: 0,
            machines,
            storage: MemoryTowerStorage::new(),
            genesis,
            verifier: Arc::new(CachedVerifier::default()),
            failure: None,
            faults: Default::default(),
            report: SimReport::default(),
            vote_log: Vec::new(),
            block_log: Vec::new(),
            idle_lock_since_ms: Vec::new(),
            watchtowers: Vec::new(),
            next_gossip_ms: 0,
            cfg,
        };
        sim.watchtowers = (0..sim.cfg.standbys)
            .map(|v| {
                let identity = sim.machines[sim.primary(v)].validator_identity.pubkey();
                crate::watchtower::SimWatchtower::new(
                    v,
                    sim.cfg.watchtower.clone(),
                    identity.to_string(),
                )
            })
            .collect();
        for m in 0..sim.machines.len() {
            sim.boot(m);
        }
        sim
    }

    /// Machine `m`'s wall clock: true time plus its offset.
    pub fn local_now(&self, m: MachineId) -> u64 {
        self.now_ms
            .saturating_add_signed(self.machines[m].clock_offset_ms)
    }

    pub fn slot(&self) -> Slot {
        self.genesis.slot_at(self.now_ms)
    }
    pub fn tick_ms(&self) -> u64 {
        (self.cfg.slot_ms / 4).max(1)
    }
    pub fn primary(&self, validator: usize) -> MachineId {
        validator
    }
    pub fn standby(&self, validator: usize) -> Option<MachineId> {
        (validator < self.cfg.standbys).then_some(self.cfg.validators + validator)
    }
    pub fn failure(&self) -> Option<&SimFailure> {
        self.failure.as_ref()
    }

    /// Starts a process on machine `m` from its disk: observer with its own identity;
    /// a primary takes its identity once caught up.
    pub(crate) fn boot(&mut self, m: MachineId) {
        let now = self.local_now(m);
        let verifier = self.verifier.clone();
        let genesis = self.genesis.clone();
        let bug = self.cfg.planted_bug;
        let max_clock_offset_ms = self.cfg.max_clock_offset_ms;
        let mach = &mut self.machines[m];
        mach.incarnation += 1;
        mach.leases.clear();
        mach.frozen_inbox.clear();
        mach.last_stored_vote = None;
        mach.store_failing_since_ms = None;
        mach.peers = Default::default();
        let mut cfg = CoreConfig::new(
            &genesis,
            mach.vote_account,
            vec![mach.validator_identity.clone()],
            mach.instance_id(),
        );
        if let Some(bug) = bug {
            cfg.plant_bug(bug).expect("checked in Sim::new");
        }
        if let Some(max) = max_clock_offset_ms {
            cfg.max_clock_offset_ms = max;
        }
        let core = Core::new(
            genesis,
            cfg,
            mach.own.clone(),
            verifier,
            mach.disk.take(),
            now,
        );
        mach.core = Some(core);
        mach.state = MachineState::Running;
        mach.takeover_events.clear();
        mach.takeover_answer = None;
        mach.acquired_recently = false;
        // A (re)started primary takes its identity once caught up: the core decides when.
        if mach.kind == MachineKind::Primary {
            let id = mach.validator_identity.clone();
            mach.core
                .as_mut()
                .expect("just set")
                .reclaim_when_caught_up(id);
        }
        self.pull_gossip(m);
    }

    pub(crate) fn push(&mut self, at_ms: u64, item: Item) {
        self.seq += 1;
        self.queue.push(at_ms, self.seq, item);
    }

    /// Runs `slots` slots. Random faults are injected while the run is in its fault
    /// phase (the first `cfg.slots` slots).
    pub fn run_slots(&mut self, slots: u64) -> Result<(), SimFailure> {
        let end = self.now_ms + slots * self.cfg.slot_ms;
        while self.now_ms < end {
            self.step()?;
        }
        Ok(())
    }

    /// One tick: deliver due events, wake machines, inject faults, tick every core.
    pub fn step(&mut self) -> Result<(), SimFailure> {
        let next = self.now_ms + self.tick_ms();
        self.deliver_until(next);
        self.now_ms = next;
        self.wake_machines();
        if self.now_ms.is_multiple_of(self.cfg.slot_ms) {
            self.on_slot_boundary();
        }
        self.run_watchtowers();
        for m in 0..self.machines.len() {
            self.tick_machine(m);
        }
        self.report.slots = self.slot();
        match self.failure.take() {
            Some(f) => {
                self.failure = Some(f.clone());
                Err(f)
            }
            None => Ok(()),
        }
    }

    fn deliver_until(&mut self, until_ms: u64) {
        while let Some((at_ms, item)) = self.queue.pop_due(until_ms) {
            self.now_ms = self.now_ms.max(at_ms);
            match item {
                Item::Deliver { to, msg } => self.deliver(to, msg),
                Item::StoreExec {
                    machine,
                    incarnation,
                    ticket,
                } => self.exec_store(machine, incarnation, ticket),
                Item::LateAcquire {
                    identity,
                    owner,
                    seen,
                } => self.late_acquire(identity, owner, seen),
            }
        }
    }

    fn wake_machines(&mut self) {
        for m in 0..self.machines.len() {
            match self.machines[m].state {
                MachineState::Frozen { until_ms } if until_ms <= self.now_ms => self.resume(m),
                MachineState::Down {
                    restart_at_ms: Some(t),
                } if t <= self.now_ms => self.boot(m),
                _ => {}
            }
        }
    }

    fn tick_machine(&mut self, m: MachineId) {
        if self.machines[m].state != MachineState::Running {
            return;
        }
        let now = self.local_now(m);
        let Some(core) = self.machines[m].core.as_mut() else {
            return;
        };
        let cmds = core.tick(now);
        self.handle(m, cmds);
    }

    /// Highest root among running cores.
    pub fn max_root(&self) -> Slot {
        self.machines
            .iter()
            .filter(|m| m.state == MachineState::Running)
            .filter_map(|m| m.core.as_ref().map(|c| c.status().root))
            .max()
            .unwrap_or(0)
    }

    /// Full run: the fault phase, heal, then the liveness phase: run fault-free until
    /// the root has advanced [`LIVENESS_ROOT_ADVANCE`] slots past where it was at the
    /// heal, failing if that takes more than `cfg.liveness_slots`. The bound must cover
    /// the longest lockout a minority fork can build under the depth-8 threshold
    /// (about 2^9 slots), which is how long Tower BFT may legitimately stall.
    pub fn run(&mut self) -> Result<SimReport, SimFailure> {
        self.run_slots(self.cfg.slots)?;
        self.heal_all();
        let heal_root = self.max_root();
        self.report.root_at_heal = heal_root;
        let mut recovered = self.cfg.liveness_slots == 0;
        for _ in 0..self.cfg.liveness_slots {
            self.run_slots(1)?;
            if self.max_root() >= heal_root + LIVENESS_ROOT_ADVANCE {
                recovered = true;
                break;
            }
        }
        self.report.final_root = self.max_root();
        self.report.recovery_slots = self.slot().saturating_sub(self.cfg.slots);
        if !recovered {
            let detail = format!(
                "roots stalled: root {heal_root} at heal, {} after {} fault-free slots",
                self.report.final_root, self.cfg.liveness_slots
            );
            return Err(self.fail(crate::report::FailureKind::Liveness(detail)));
        }
        self.report.violations = self.auditor.violations().len() as u64;
        self.report.votes_audited = self.auditor.votes_seen;
        self.report.blocks_audited = self.auditor.blocks_seen;
        Ok(self.report.clone())
    }

    pub(crate) fn fail(&mut self, kind: crate::report::FailureKind) -> SimFailure {
        let f = SimFailure {
            seed: self.cfg.seed,
            slot: self.slot(),
            kind,
            replay: self.cfg.replay_command(),
        };
        if self.failure.is_none() {
            self.failure = Some(f.clone());
        }
        f
    }
}

fn new_machine(
    id: MachineId,
    kind: MachineKind,
    validator: usize,
    own: Keypair,
    validator_identity: Keypair,
) -> Machine {
    Machine {
        id,
        kind,
        validator,
        own,
        validator_identity,
        vote_account: vote_account(validator),
        state: MachineState::Down {
            restart_at_ms: None,
        },
        core: None,
        incarnation: 0,
        leases: HashMap::new(),
        disk: None,
        frozen_inbox: Vec::new(),
        takeover_events: Vec::new(),
        takeover_answer: None,
        acquired_recently: false,
        group: 0,
        storage_cut: false,
        last_stored_vote: None,
        store_failing_since_ms: None,
        peers: Default::default(),
        clock_offset_ms: 0,
        stats: MachineStats::default(),
    }
}

/// Deterministic keys: `role` 1 = validator identities, 2 = standby identities.
fn key(role: u8, i: usize) -> Keypair {
    let mut secret = [0u8; 32];
    secret[0] = role;
    secret[1..9].copy_from_slice(&(i as u64).to_le_bytes());
    Keypair::from_secret(&secret)
}

pub fn vote_account(i: usize) -> Pubkey {
    let mut b = [0xA5u8; 32];
    b[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Pubkey(b)
}

impl Sim {
    /// One line per machine: state, identity role and core status (for failure reports).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for m in &self.machines {
            let status = m.core.as_ref().map(|c| (c.status(), c.stats().clone()));
            out.push_str(&format!(
                "machine {} ({:?} of v{}, {}): {:?} votes_sent={} blocks={} exits={:?}\n    {:?}\n",
                m.id,
                m.kind,
                m.validator,
                m.instance_id(),
                m.state,
                m.stats.votes_sent,
                m.stats.blocks_produced,
                m.stats
                    .exits
                    .iter()
                    .map(|(t, r)| format!("{t}:{r}"))
                    .collect::<Vec<_>>(),
                status
            ));
        }
        out
    }
}
