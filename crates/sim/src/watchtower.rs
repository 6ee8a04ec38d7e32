//! The watchtower of every validator that has a standby: the shipped decision state
//! machine ([`huione_watchtower::decision::Monitor`]), fed with observations read from the
//! simulated world as the real probes would read them, and its failovers carried out with
//! the simulator's set-identity. Only the probing and the admin call are simulated; every
//! decision (thresholds, hysteresis, arming, cooldown, retries) is the real one.
//!
//! What each probe reads (the watchtower runs on the standby's machine):
//! - the primary's `getHealth`/`getSlot`/`huioneStatus`: a crashed process refuses the
//!   connection; a frozen one, or one in another network partition than the standby, times
//!   out; a running one answers as the daemon does (unhealthy once its stores have failed
//!   for two slots, behind when not caught up by its own clock);
//! - the standby's identity, health and slot; the vote accounts of its newest bank;
//! - gossip: every running process pushes its contact info every [`GOSSIP_PUSH_MS`] to
//!   the running processes of its partition, and a (re)started one pulls the table of its
//!   partition at once; an entry lives [`GOSSIP_TTL_MS`]. A node's
//!   peer-message age (`peerMessageAgeMs`) counts these pushes and every block, vote,
//!   announcement or repair request it receives.

use std::collections::{BTreeMap, VecDeque};

use huione_core::TakeoverReason;
use huione_watchtower::decision::{
    Decision, FailoverOrder, Monitor, Observation, PrimaryRpc, Settings, StandbyView, VoteView,
};

use crate::world::{MachineId, MachineState, Sim};

/// The shipped watchtower's defaults: a check starts every `CHECK_INTERVAL_MS` whether or
/// not earlier ones have answered; a probe of a frozen or unreachable node ends after
/// `RPC_TIMEOUT_MS`, which delays that check's decision (and every later one's: checks
/// are judged in the order they started).
pub use huione_watchtower::config::{
    DEFAULT_CHECK_INTERVAL_MS as CHECK_INTERVAL_MS, DEFAULT_RPC_TIMEOUT_MS as RPC_TIMEOUT_MS,
    DEFAULT_SET_IDENTITY_TIMEOUT_MS as SET_IDENTITY_TIMEOUT_MS,
};
/// How often a node pushes its contact info to its peers (huione-net).
pub const GOSSIP_PUSH_MS: u64 = 500;
/// How long a gossip entry lives without a refresh (huione-net's `entry_ttl_ms`).
pub const GOSSIP_TTL_MS: u64 = 15_000;

/// One failover the watchtower ordered, and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverRecord {
    pub decided_ms: u64,
    pub order: FailoverOrder,
    /// When set-identity answered (or the watchtower gave up waiting).
    pub finished_ms: Option<u64>,
    /// set-identity's answer: Ok, or the error the watchtower got.
    pub result: Option<Result<(), String>>,
}

/// A set-identity call the watchtower is waiting on (it runs no checks meanwhile).
#[derive(Clone, Debug)]
struct Acting {
    takeover_id: u64,
    incarnation: u64,
    deadline_ms: u64,
}

/// The watchtower next to validator `validator`'s standby.
#[derive(Clone, Debug)]
pub struct SimWatchtower {
    pub validator: usize,
    monitor: Monitor,
    next_check_ms: u64,
    /// Checks whose probes are still out, in start order: (due, observation). Each is
    /// decided when due and after every earlier one (the shipped driver's `InOrder`).
    pending: VecDeque<(u64, Observation)>,
    acting: Option<Acting>,
    /// How many checks ended in each decision (by [`Decision::label`]).
    pub decisions: BTreeMap<&'static str, u64>,
    /// Every failover ordered, in order.
    pub failovers: Vec<FailoverRecord>,
    /// The last check's decision.
    pub last: Option<Decision>,
}

impl SimWatchtower {
    pub(crate) fn new(validator: usize, settings: Settings, primary_identity: String) -> Self {
        SimWatchtower {
            validator,
            monitor: Monitor::new(settings, primary_identity),
            next_check_ms: CHECK_INTERVAL_MS,
            pending: VecDeque::new(),
            acting: None,
            decisions: BTreeMap::new(),
            failovers: Vec::new(),
            last: None,
        }
    }

    /// The decision state machine itself (armed, failing checks).
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// Checks that ended in the decision labelled `label` ("failover", "suspect",
    /// "hold_not_armed", ...).
    pub fn count(&self, label: &str) -> u64 {
        self.decisions.get(label).copied().unwrap_or(0)
    }
}

/// The simulator's gossip and peer-message bookkeeping of one process.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerView {
    /// True time this process last received anything from another node.
    pub last_peer_message_ms: Option<u64>,
    /// Its gossip table: identity → true time of the last contact info heard.
    pub gossip: BTreeMap<huione_keys::Pubkey, u64>,
}

impl Sim {
    /// Gossip pushes and every watchtower's checks, once per tick.
    pub(crate) fn run_watchtowers(&mut self) {
        if self.now_ms >= self.next_gossip_ms {
            self.next_gossip_ms = self.now_ms + GOSSIP_PUSH_MS;
            self.push_gossip();
        }
        for v in 0..self.watchtowers.len() {
            self.run_watchtower(v);
        }
    }

    /// A (re)started process pulls the gossip table at once, as a node joining through an
    /// entrypoint does: the running processes of its partition, and every entry they hold.
    pub(crate) fn pull_gossip(&mut self, m: MachineId) {
        let now = self.now_ms;
        let group = self.machines[m].group;
        let mut heard: Vec<(huione_keys::Pubkey, u64)> = Vec::new();
        for o in &self.machines {
            if o.id == m || o.group != group || o.state != MachineState::Running {
                continue;
            }
            if let Some(core) = o.core.as_ref() {
                heard.push((core.identity(), now));
                heard.extend(o.peers.gossip.iter().map(|(k, t)| (*k, *t)));
            }
        }
        let view = &mut self.machines[m].peers;
        if !heard.is_empty() {
            view.last_peer_message_ms = Some(now);
        }
        for (identity, at_ms) in heard {
            let entry = view.gossip.entry(identity).or_insert(at_ms);
            *entry = (*entry).max(at_ms);
        }
    }

    /// Every running process hears the contact info of every other running process of
    /// its partition (a frozen one neither pushes nor receives).
    fn push_gossip(&mut self) {
        let now = self.now_ms;
        let running: Vec<(MachineId, u8, huione_keys::Pubkey)> = self
            .machines
            .iter()
            .filter(|m| m.state == MachineState::Running)
            .filter_map(|m| m.core.as_ref().map(|c| (m.id, m.group, c.identity())))
            .collect();
        for &(m, group, _) in &running {
            for &(o, o_group, identity) in &running {
                if o != m && o_group == group {
                    let view = &mut self.machines[m].peers;
                    view.last_peer_message_ms = Some(now);
                    view.gossip.insert(identity, now);
                }
            }
            self.machines[m]
                .peers
                .gossip
                .retain(|_, heard| heard.saturating_add(GOSSIP_TTL_MS) > now);
        }
    }

    fn run_watchtower(&mut self, i: usize) {
        let now = self.now_ms;
        self.settle_failover(i);
        if self.watchtowers[i].acting.is_some() {
            return;
        }
        while let Some((due_ms, _)) = self.watchtowers[i].pending.front() {
            if *due_ms > now || self.watchtowers[i].acting.is_some() {
                break;
            }
            let (_, obs) = self.watchtowers[i].pending.pop_front().expect("checked");
            self.decide(i, &obs);
        }
        // A failover aborts the checks still out (the shipped driver's `InOrder::clear`).
        if self.watchtowers[i].acting.is_some() {
            self.watchtowers[i].pending.clear();
            return;
        }
        if now < self.watchtowers[i].next_check_ms {
            return;
        }
        let v = self.watchtowers[i].validator;
        let (obs, took_ms) = self.observe_pair(v);
        let w = &mut self.watchtowers[i];
        // Checks start on the interval, however long earlier ones take.
        w.next_check_ms = now + CHECK_INTERVAL_MS;
        if took_ms == 0 && w.pending.is_empty() {
            self.decide(i, &obs);
        } else {
            w.pending.push_back((now + took_ms, obs));
        }
    }

    fn decide(&mut self, i: usize, obs: &Observation) {
        let now = self.now_ms;
        let w = &mut self.watchtowers[i];
        let decision = w.monitor.observe(obs, now);
        *w.decisions.entry(decision.label()).or_default() += 1;
        w.last = Some(decision.clone());
        let Decision::Failover(order) = decision else {
            return;
        };
        w.failovers.push(FailoverRecord {
            decided_ms: now,
            order,
            finished_ms: None,
            result: None,
        });
        let v = w.validator;
        let standby = self.standby(v).expect("a watchtower has a standby");
        match self.start_takeover(standby, TakeoverReason::Monitor) {
            Err(e) => self.failover_finished(i, Err(e)),
            Ok(takeover_id) => {
                self.watchtowers[i].acting = Some(Acting {
                    takeover_id,
                    incarnation: self.machines[standby].incarnation,
                    deadline_ms: now + SET_IDENTITY_TIMEOUT_MS,
                });
                self.settle_failover(i);
            }
        }
    }

    /// Whether the set-identity call has answered (as the daemon answers it: at the
    /// takeover's switch or failure), its process died, or the call timed out.
    fn settle_failover(&mut self, i: usize) {
        let Some(acting) = self.watchtowers[i].acting.clone() else {
            return;
        };
        let standby = self
            .standby(self.watchtowers[i].validator)
            .expect("a watchtower has a standby");
        let mach = &self.machines[standby];
        let result = if mach.incarnation != acting.incarnation
            || matches!(mach.state, MachineState::Down { .. })
        {
            Err("the standby's admin socket closed (its process stopped)".to_string())
        } else if let Some((_, r)) = mach
            .takeover_answer
            .as_ref()
            .filter(|(id, _)| *id == acting.takeover_id)
        {
            r.clone()
        } else if self.now_ms >= acting.deadline_ms {
            Err(format!(
                "set-identity did not answer within {SET_IDENTITY_TIMEOUT_MS} ms"
            ))
        } else {
            return;
        };
        self.watchtowers[i].acting = None;
        self.failover_finished(i, result);
    }

    fn failover_finished(&mut self, i: usize, result: Result<(), String>) {
        let now = self.now_ms;
        let w = &mut self.watchtowers[i];
        w.monitor.failover_finished(result.is_ok(), now);
        let record = w.failovers.last_mut().expect("a failover was ordered");
        record.finished_ms = Some(now);
        record.result = Some(result);
        self.report.watchtower_failovers += 1;
    }

    /// One check of validator `v`'s pair, as the watchtower on its standby's machine
    /// reads it, and how long its slowest probe takes ([`RPC_TIMEOUT_MS`] when one times
    /// out; until it resumes, for a primary frozen for less than that).
    fn observe_pair(&self, v: usize) -> (Observation, u64) {
        let p = self.primary(v);
        let s = self.standby(v).expect("a watchtower has a standby");
        let (pm, sm) = (&self.machines[p], &self.machines[s]);
        let identity = pm.validator_identity.pubkey();
        let mut took_ms = 0;
        // A process frozen for less than the probe's timeout answers when it resumes.
        let answers_at = match pm.state {
            MachineState::Running => Some(self.now_ms),
            MachineState::Frozen { until_ms } if until_ms < self.now_ms + RPC_TIMEOUT_MS => {
                Some(until_ms)
            }
            _ => None,
        };
        let (primary_rpc, primary_slot, primary_silence_ms) = match (pm.state, pm.core.as_ref()) {
            (MachineState::Running | MachineState::Frozen { .. }, Some(core))
                if pm.group == sm.group && answers_at.is_some() =>
            {
                took_ms = answers_at.expect("checked") - self.now_ms;
                (
                    self.health(p),
                    Some(core.status().best_slot),
                    self.silence_ms(p),
                )
            }
            (MachineState::Down { .. }, _) | (MachineState::Running, None) => (
                PrimaryRpc::Unreachable("connection refused".into()),
                None,
                None,
            ),
            (MachineState::Running | MachineState::Frozen { .. }, _) => {
                took_ms = RPC_TIMEOUT_MS;
                (PrimaryRpc::Timeout, None, None)
            }
        };
        let mut obs = Observation {
            primary_rpc,
            primary_slot,
            standby_slot: None,
            standby: None,
            votes: None,
            gossip_present: None,
            primary_silence_ms,
            standby_silence_ms: None,
        };
        match (sm.state, sm.core.as_ref()) {
            (MachineState::Running, Some(core)) => {
                let status = core.status();
                obs.standby = Some(StandbyView {
                    identity: core.identity().to_string(),
                    caught_up: self.health(s) == PrimaryRpc::Healthy,
                });
                obs.standby_slot = Some(status.best_slot);
                obs.votes = core
                    .bank(status.best_slot)
                    .or_else(|| core.bank(status.root))
                    .and_then(|bank| vote_view(bank, &pm.vote_account));
                let listed = core.identity() == identity || sm.peers.gossip.contains_key(&identity);
                obs.gossip_present = Some(listed);
                obs.standby_silence_ms = self.silence_ms(s);
            }
            (MachineState::Frozen { .. }, _) => took_ms = RPC_TIMEOUT_MS,
            _ => {}
        }
        (obs, took_ms)
    }

    /// `getHealth` of running machine `m`, as the daemon answers it.
    fn health(&self, m: MachineId) -> PrimaryRpc {
        let mach = &self.machines[m];
        let Some(core) = mach.core.as_ref() else {
            return PrimaryRpc::Unreachable("connection refused".into());
        };
        // The daemon reports itself unhealthy once its stores have failed for two slots.
        let failing_ms = mach
            .store_failing_since_ms
            .map(|t| self.now_ms.saturating_sub(t));
        if failing_ms.is_some_and(|ms| ms >= 2 * self.cfg.slot_ms) {
            return PrimaryRpc::Behind(None);
        }
        let now = self.local_now(m);
        if core.caught_up(now) {
            PrimaryRpc::Healthy
        } else {
            let behind = self
                .genesis
                .slot_at(now)
                .saturating_sub(core.status().best_slot);
            PrimaryRpc::Behind(Some(behind))
        }
    }

    /// `huioneStatus`'s `peerMessageAgeMs` of machine `m` (None: never heard a peer).
    fn silence_ms(&self, m: MachineId) -> Option<u64> {
        self.machines[m]
            .peers
            .last_peer_message_ms
            .map(|t| self.now_ms.saturating_sub(t))
    }
}

/// `getVoteAccounts` read as the watchtower reads it: the primary's account against the
/// newest vote of any other account; None while the primary has no vote in this bank.
fn vote_view(bank: &huione_core::Bank, vote_account: &huione_keys::Pubkey) -> Option<VoteView> {
    let last = |a: &huione_core::VoteAccount| a.lockouts.last_voted_slot().unwrap_or(0);
    let primary_last_vote = bank.account(vote_account).map(last)?;
    if primary_last_vote == 0 {
        return None;
    }
    let cluster_last_vote = bank
        .accounts()
        .filter(|(k, _)| *k != vote_account)
        .map(|(_, a)| last(a))
        .max()
        .unwrap_or(primary_last_vote);
    Some(VoteView {
        primary_last_vote,
        cluster_last_vote,
    })
}
