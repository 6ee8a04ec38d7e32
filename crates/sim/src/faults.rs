//! Faults: the operations scenarios call by hand, and the seeded random injector.

use crate::world::{MachineId, MachineKind, MachineState, Sim};

/// How long a running process that reaches storage may hold a lock without voting under
/// it: the core's `takeover_finish_ms` (5 s) plus storage round trips and retries.
pub const HALF_FINISHED_BOUND_MS: u64 = 8_000;

#[derive(Debug, Default)]
pub(crate) struct FaultState {
    partition_until_ms: Option<u64>,
    outage_until_ms: Option<u64>,
    cuts: Vec<(MachineId, u64)>,
    healed: bool,
}

impl Sim {
    /// Crashes machine `m`'s process (unsynced state lost); restarts after `slots`
    /// (None: stays down until [`Sim::restart`]).
    pub fn crash(&mut self, m: MachineId, restart_after_slots: Option<u64>) {
        let at = restart_after_slots.map(|s| self.now_ms + s * self.cfg.slot_ms);
        self.stop_process(m, at);
    }

    pub fn restart(&mut self, m: MachineId) {
        if matches!(self.machines[m].state, MachineState::Down { .. }) {
            self.boot(m);
        }
    }

    /// Pauses the process for `slots` (SIGSTOP): no ticks, messages wait in its buffers.
    pub fn freeze(&mut self, m: MachineId, slots: u64) {
        if self.machines[m].state == MachineState::Running {
            let until_ms = self.now_ms + slots * self.cfg.slot_ms;
            self.machines[m].state = MachineState::Frozen { until_ms };
        }
    }

    /// Resumes a frozen process with its stale view; buffered messages arrive first.
    pub fn resume(&mut self, m: MachineId) {
        if !matches!(self.machines[m].state, MachineState::Frozen { .. }) {
            return;
        }
        self.machines[m].state = MachineState::Running;
        let inbox = std::mem::take(&mut self.machines[m].frozen_inbox);
        for (_, msg) in inbox {
            self.deliver(m, msg);
        }
    }

    /// The operator's `set-identity` on machine `m` (the watchtower's goes through
    /// [`Sim::take_identity`] with its own reason).
    pub fn set_identity(&mut self, m: MachineId) -> Result<(), String> {
        self.take_identity(m, huione_core::TakeoverReason::SetIdentity)
    }

    /// Cuts machine `m` off from tower storage (it still reaches the cluster).
    pub fn cut_storage(&mut self, m: MachineId, cut: bool) {
        self.machines[m].storage_cut = cut;
    }

    /// Steps machine `m`'s wall clock to `offset_ms` from true time (NTP broken or fixed).
    pub fn set_clock_offset(&mut self, m: MachineId, offset_ms: i64) {
        self.machines[m].clock_offset_ms = offset_ms;
    }

    pub fn storage_outage(&mut self, down: bool) {
        self.storage.set_available(!down);
    }

    /// Isolates `machines` from everyone else.
    pub fn partition(&mut self, machines: &[MachineId]) {
        for m in &mut self.machines {
            m.group = u8::from(machines.contains(&m.id));
        }
    }

    pub fn heal_partition(&mut self) {
        for m in &mut self.machines {
            m.group = 0;
        }
    }

    /// Ends every fault: resume, restart, reconnect, storage back.
    pub fn heal_all(&mut self) {
        self.faults.healed = true;
        self.heal_partition();
        self.storage_outage(false);
        for m in 0..self.machines.len() {
            self.cut_storage(m, false);
            self.set_clock_offset(m, 0);
            self.resume(m);
            if let MachineState::Down { restart_at_ms } = self.machines[m].state {
                let soon = self.now_ms + self.cfg.slot_ms;
                let at = restart_at_ms.map_or(soon, |t| t.min(soon));
                self.machines[m].state = MachineState::Down {
                    restart_at_ms: Some(at),
                };
            }
        }
        self.faults.partition_until_ms = None;
        self.faults.outage_until_ms = None;
        self.faults.cuts.clear();
    }

    pub(crate) fn on_slot_boundary(&mut self) {
        self.expire_faults();
        self.check_no_half_finished_takeover();
        if self.in_fault_phase() {
            self.inject_random_faults();
        }
    }

    pub(crate) fn in_fault_phase(&self) -> bool {
        self.slot() < self.cfg.slots && !self.faults.healed
    }

    /// A storage-call fault of probability `p`, drawn only in the fault phase (a quiet
    /// scenario draws nothing, so its random sequence is unchanged).
    pub(crate) fn call_fault(&mut self, p: f64) -> bool {
        p > 0.0 && self.in_fault_phase() && self.rng.chance(p)
    }

    /// No half-finished takeover: a lock record held by a running process that reaches
    /// storage must be voted under (or given up) within [`HALF_FINISHED_BOUND_MS`]. A
    /// frozen or dead holder is the watchtower's business, not this check's.
    fn check_no_half_finished_takeover(&mut self) {
        self.idle_lock_since_ms.resize(self.cfg.validators, None);
        for v in 0..self.cfg.validators {
            let identity = self.machines[self.primary(v)].validator_identity.pubkey();
            let idle = match self.storage.lock_holder_now(&identity) {
                Ok(Some(r)) if r.is_held() => self.machines.iter().any(|m| {
                    m.instance_id() == r.owner.instance_id
                        && m.state == MachineState::Running
                        && !m.storage_cut
                        && m.core.as_ref().is_some_and(|c| {
                            let st = c.status();
                            st.halted.is_none()
                                && !st.stepping_down
                                && st.fence.is_none_or(|f| f.revision != r.revision)
                        })
                }),
                // Storage unreachable, nobody holds it, or released.
                _ => false,
            };
            if !idle {
                self.idle_lock_since_ms[v] = None;
                continue;
            }
            let since = *self.idle_lock_since_ms[v].get_or_insert(self.now_ms);
            if self.now_ms - since > HALF_FINISHED_BOUND_MS {
                let detail = format!(
                    "validator {v}'s lock has been held for {} ms by a running process that                      does not vote under it\n{}",
                    self.now_ms - since,
                    self.describe()
                );
                self.fail(crate::report::FailureKind::HalfFinishedTakeover(detail));
            }
        }
    }

    fn expire_faults(&mut self) {
        let now = self.now_ms;
        if self.faults.partition_until_ms.is_some_and(|t| t <= now) {
            self.faults.partition_until_ms = None;
            self.heal_partition();
        }
        if self.faults.outage_until_ms.is_some_and(|t| t <= now) {
            self.faults.outage_until_ms = None;
            self.storage_outage(false);
        }
        let (done, keep): (Vec<_>, Vec<_>) = self.faults.cuts.iter().partition(|(_, t)| *t <= now);
        self.faults.cuts = keep;
        for (m, _) in done {
            self.cut_storage(m, false);
        }
    }

    fn inject_random_faults(&mut self) {
        let f = self.cfg.faults.clone();
        let n = self.machines.len() as u64;
        if self.rng.chance(f.crash) {
            let m = self.rng.below(n) as MachineId;
            let after = self.rng.range(2, 12);
            self.count_fault();
            self.crash(m, Some(after));
        }
        if self.rng.chance(f.freeze) {
            let m = self.rng.below(n) as MachineId;
            let slots = self.rng.range(1, 20);
            self.count_fault();
            self.freeze(m, slots);
        }
        self.random_takeovers(&f);
        self.random_isolation(&f);
        if self.rng.chance(f.clock_step) {
            let m = self.rng.below(n) as MachineId;
            let max = (crate::config::MAX_CLOCK_STEP_SLOTS * self.cfg.slot_ms) as i64;
            // Half the steps put the clock right again; the rest anywhere within ±max.
            let offset = if self.rng.chance(0.5) {
                0
            } else {
                self.rng.range(0, 2 * max as u64 + 1) as i64 - max
            };
            self.count_fault();
            self.set_clock_offset(m, offset);
        }
    }

    fn random_takeovers(&mut self, f: &crate::config::FaultRates) {
        if self.cfg.standbys == 0 {
            return;
        }
        let v = self.rng.below(self.cfg.standbys as u64) as usize;
        let (p, s) = (self.primary(v), self.standby(v).expect("v < standbys"));
        if self.rng.chance(f.failover) {
            self.count_fault();
            let _ = self.set_identity(s);
        } else if self.rng.chance(f.dual_takeover) {
            self.count_fault();
            let (a, b) = if self.rng.chance(0.5) { (p, s) } else { (s, p) };
            let _ = self.set_identity(a);
            let _ = self.set_identity(b);
        }
    }

    fn random_isolation(&mut self, f: &crate::config::FaultRates) {
        let now = self.now_ms;
        let slot_ms = self.cfg.slot_ms;
        if self.faults.partition_until_ms.is_none() && self.rng.chance(f.partition) {
            let minority = self.random_minority();
            self.count_fault();
            self.partition(&minority);
            self.faults.partition_until_ms = Some(now + self.rng.range(2, 12) * slot_ms);
        }
        if self.faults.outage_until_ms.is_none() && self.rng.chance(f.storage_outage) {
            self.count_fault();
            self.storage_outage(true);
            self.faults.outage_until_ms = Some(now + self.rng.range(1, 6) * slot_ms);
        }
        if self.rng.chance(f.storage_cut) {
            let m = self.rng.below(self.machines.len() as u64) as MachineId;
            self.count_fault();
            self.cut_storage(m, true);
            let until = now + self.rng.range(2, 10) * slot_ms;
            self.faults.cuts.push((m, until));
        }
    }

    /// Machines of validators holding less than a third of the stake (both machines of
    /// a pair go together), so the rest of the cluster stays live.
    fn random_minority(&mut self) -> Vec<MachineId> {
        let total = self.genesis.total_stake();
        let mut stake = 0;
        let mut out = Vec::new();
        let start = self.rng.below(self.cfg.validators as u64) as usize;
        for k in 0..self.cfg.validators {
            let v = (start + k) % self.cfg.validators;
            let s = self.genesis.validators[v].stake;
            if (stake + s) * 3 >= total {
                break;
            }
            stake += s;
            out.extend(
                self.machines
                    .iter()
                    .filter(|m| m.validator == v)
                    .map(|m| m.id),
            );
        }
        out
    }

    fn count_fault(&mut self) {
        self.report.faults_injected += 1;
    }

    /// The kind of machine `m`.
    pub fn kind(&self, m: MachineId) -> MachineKind {
        self.machines[m].kind
    }
}
