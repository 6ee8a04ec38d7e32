//! The simulated driver: executes a core's commands against the simulated network and
//! storage, and feeds events back. This is the part the real daemon replaces.

use huione_core::audit::{AuditRecord, BlockRecord, VoteRecord};
use huione_core::{
    Command, ExitReason, LockHolder, StorageAnswer, StorageCall, StorageOp, StorageProblem,
    StoreFailure, StoreTicket, TakeoverEvent, TakeoverReason, TakeoverRequest,
};
use huione_tower_storage::{Lease, LockEvent, LockOwner, StorageError};

use crate::report::FailureKind;
use crate::world::{Item, MachineId, MachineState, Msg, Sim};

impl Sim {
    /// Executes `cmds` from machine `m` in order.
    pub(crate) fn handle(&mut self, m: MachineId, cmds: Vec<Command>) {
        for cmd in cmds {
            match cmd {
                Command::StoreTower(ticket) => self.send_store(m, ticket),
                Command::SendVote(v) => self.send_vote(m, v.into_vote()),
                Command::BroadcastBlock(b) => self.broadcast_block(m, b),
                Command::RequestRepair { slot, hash } => self.request_repair(m, slot, hash),
                Command::SendRepair { to, blocks } => {
                    self.send(m, to as MachineId, Msg::Blocks(blocks))
                }
                Command::Announce(a) => self.broadcast(m, |_| Msg::Announce(a.clone())),
                Command::Exit(reason) => self.exit(m, reason),
                Command::Storage(call) => self.storage_call(m, call),
                Command::Takeover(ev) => self.on_takeover_event(m, ev),
            }
        }
    }

    fn send_store(&mut self, m: MachineId, ticket: StoreTicket) {
        let (lo, hi) = (self.cfg.net.storage_min_ms, self.cfg.net.storage_max_ms);
        let at = self.now_ms + self.rng.range(lo, hi);
        let incarnation = self.machines[m].incarnation;
        self.push(
            at,
            Item::StoreExec {
                machine: m,
                incarnation,
                ticket,
            },
        );
    }

    /// The store request reaches storage (even if the process has since crashed or
    /// frozen: it was already on the wire). The answer goes back to the process.
    pub(crate) fn exec_store(&mut self, m: MachineId, incarnation: u64, ticket: StoreTicket) {
        let mach = &self.machines[m];
        let fence = ticket.fence();
        let result = match mach.leases.get(&fence.revision).cloned() {
            // As the daemon does: no lease for the fence is a lost lock.
            None => Err(StoreFailure::LockLost(format!(
                "no lease for {} at revision {}",
                fence.identity, fence.revision
            ))),
            Some(_) if mach.storage_cut => Err(StoreFailure::Unavailable(
                "this machine cannot reach storage".into(),
            )),
            Some(lease) => self
                .storage
                .store_now(&lease, ticket.tower())
                .map_err(|e| StoreFailure::from(problem(&e))),
        };
        let mach = &mut self.machines[m];
        if mach.incarnation == incarnation {
            // What the daemon's health check sees (an answer lost below counts as a failure).
            match &result {
                Ok(_) => mach.store_failing_since_ms = None,
                Err(_) => {
                    mach.store_failing_since_ms.get_or_insert(self.now_ms);
                }
            }
        }
        let stats = &mut mach.stats;
        match &result {
            Ok(_) => stats.stores_ok += 1,
            Err(StoreFailure::LockLost(_)) => stats.stores_lock_lost += 1,
            Err(StoreFailure::Unavailable(_) | StoreFailure::BadReceipt(_)) => {
                stats.stores_unavailable += 1
            }
        }
        let report = match result {
            Ok(receipt) => {
                // The driver reads back what it stored (the bytes are its own core's; the
                // signature is checked when a tower is loaded, not here).
                let stored_vote = ticket
                    .tower()
                    .verify_with(&ticket.fence().identity, |_, _, _| true)
                    .ok()
                    .and_then(|t| t.last_voted_slot());
                let mach = &mut self.machines[m];
                if mach.incarnation == incarnation {
                    mach.last_stored_vote = mach.last_stored_vote.max(stored_vote);
                }
                if self.call_fault(self.cfg.faults.store_answer_lost) {
                    // Applied, but the answer is lost: the core retries the same tower.
                    if self.machines[m].incarnation == incarnation {
                        self.machines[m]
                            .store_failing_since_ms
                            .get_or_insert(self.now_ms);
                    }
                    ticket.failed(StoreFailure::Unavailable(
                        "the store's answer was lost".into(),
                    ))
                } else {
                    ticket.confirmed(receipt)
                }
            }
            Err(failure) => ticket.failed(failure),
        };
        let (lo, hi) = (self.cfg.net.storage_min_ms, self.cfg.net.storage_max_ms);
        let at = self.now_ms + self.rng.range(lo, hi);
        self.push(
            at,
            Item::Deliver {
                to: m,
                msg: Msg::StoreResult {
                    incarnation,
                    report,
                },
            },
        );
    }

    /// Invariant 1 (checked here, independently of the core): a vote leaves only after
    /// a store by this process succeeded whose tower contains the vote.
    fn send_vote(&mut self, m: MachineId, vote: huione_core::SignedVote) {
        let mach = &self.machines[m];
        let stored_after = mach.last_stored_vote.is_some_and(|s| s >= vote.slot);
        if !stored_after && self.cfg.check_store_before_send {
            let detail = format!(
                "{} sent its vote for slot {} (decided at {} ms) without a store after it",
                mach.instance_id(),
                vote.slot,
                vote.timestamp_ms
            );
            self.fail(FailureKind::VoteBeforeStore(detail));
        }
        let record = VoteRecord::from_vote(&vote, &self.machines[m].instance_id(), self.now_ms);
        self.audit(AuditRecord::Vote(record));
        self.vote_log.push(crate::world::SentVote {
            sent_ms: self.now_ms,
            machine: m,
            vote_account: vote.vote_account,
            slot: vote.slot,
            decided_ms: vote.timestamp_ms,
        });
        let stats = &mut self.machines[m].stats;
        stats.votes_sent += 1;
        stats.last_vote_sent_ms = Some(self.now_ms);
        self.broadcast(m, |_| Msg::Vote(vote.clone()));
    }

    fn broadcast_block(&mut self, m: MachineId, b: huione_core::Block) {
        let record = BlockRecord::from_block(&b, &self.machines[m].instance_id(), self.now_ms);
        self.audit(AuditRecord::Block(record));
        self.machines[m].stats.blocks_produced += 1;
        self.block_log.push((self.now_ms, m, b.slot));
        self.broadcast(m, |_| Msg::Block(b.clone()));
    }

    /// Invariants 3 and 4, after every vote and block.
    fn audit(&mut self, record: AuditRecord) {
        if let Some(v) = self.auditor.record(&record).into_iter().next() {
            self.fail(FailureKind::Violation(Box::new(v)));
        }
    }

    fn request_repair(&mut self, m: MachineId, slot: huione_core::Slot, hash: huione_core::Hash) {
        let peers: Vec<MachineId> = (0..self.machines.len())
            .filter(|p| *p != m && self.machines[*p].state == MachineState::Running)
            .collect();
        if let Some(p) = self.rng.pick(&peers) {
            self.send(
                m,
                p,
                Msg::RepairRequest {
                    from: m,
                    slot,
                    hash,
                },
            );
        }
    }

    fn broadcast(&mut self, from: MachineId, msg: impl Fn(MachineId) -> Msg) {
        for to in 0..self.machines.len() {
            if to != from {
                self.send(from, to, msg(to));
            }
        }
    }

    /// Network: partitions drop, loss drops, random delay reorders.
    pub(crate) fn send(&mut self, from: MachineId, to: MachineId, msg: Msg) {
        if self.machines[from].group != self.machines[to].group
            || self.rng.chance(self.cfg.net.loss)
        {
            return;
        }
        let at = self.now_ms
            + self
                .rng
                .range(self.cfg.net.min_delay_ms, self.cfg.net.max_delay_ms);
        self.push(at, Item::Deliver { to, msg });
    }

    pub(crate) fn deliver(&mut self, to: MachineId, msg: Msg) {
        match self.machines[to].state {
            MachineState::Running => self.dispatch(to, msg),
            MachineState::Frozen { .. } => {
                let inbox = &mut self.machines[to].frozen_inbox;
                if inbox.len() < crate::world::MAX_FROZEN_INBOX {
                    inbox.push((self.now_ms, msg));
                }
            }
            MachineState::Down { .. } => {}
        }
    }

    fn dispatch(&mut self, to: MachineId, msg: Msg) {
        let now = self.local_now(to);
        let incarnation = self.machines[to].incarnation;
        if msg.is_from_peer() {
            self.machines[to].peers.last_peer_message_ms = Some(self.now_ms);
        }
        let Some(core) = self.machines[to].core.as_mut() else {
            return;
        };
        let cmds = match msg {
            Msg::Block(b) => core.on_block(now, b),
            Msg::Blocks(bs) => core.on_blocks(now, bs),
            Msg::Vote(v) => core.on_vote(now, v),
            Msg::Announce(a) => core.on_announcement(now, a),
            Msg::RepairRequest { from, slot, hash } => {
                core.on_repair_request(from as u64, slot, hash)
            }
            Msg::StoreResult {
                incarnation: i,
                report,
            } if i == incarnation => core.on_store_report(now, report),
            Msg::StoreResult { .. } => Vec::new(),
            Msg::StorageAnswer {
                incarnation: i,
                call,
                answer,
            } if i == incarnation => core.on_storage_answer(now, call, answer),
            Msg::StorageAnswer { .. } => Vec::new(),
        };
        self.handle(to, cmds);
    }

    /// The process exits (lost lock, duplicate instance): it restarts later, as the
    /// operator's service manager would. Its disk (ledger) survives.
    fn exit(&mut self, m: MachineId, reason: ExitReason) {
        let now = self.now_ms;
        self.machines[m].stats.exits.push((now, reason));
        let delay = self.rng.range(5, 15) * self.cfg.slot_ms;
        self.stop_process(m, Some(now + delay));
    }

    /// Kills the process: in-memory state is gone, the ledger stays on disk.
    pub(crate) fn stop_process(&mut self, m: MachineId, restart_at_ms: Option<u64>) {
        let mach = &mut self.machines[m];
        if let Some(core) = mach.core.take() {
            mach.disk = Some(core.into_ledger());
        }
        mach.leases.clear();
        mach.frozen_inbox.clear();
        mach.state = MachineState::Down { restart_at_ms };
    }

    /// Takes the validator identity on machine `m` (the set-identity admin command, or
    /// the watchtower's failover): the core runs the takeover, this driver only executes its
    /// storage calls. `Err` when it failed (or its acquire's answer was lost: the core then
    /// finishes or releases by itself); `Ok` when it switched or is still running.
    pub fn take_identity(&mut self, m: MachineId, reason: TakeoverReason) -> Result<(), String> {
        let id = self.start_takeover(m, reason)?;
        match &self.machines[m].takeover_answer {
            Some((answered, r)) if *answered == id => r.clone(),
            _ => Ok(()),
        }
    }

    /// Starts a takeover on machine `m` and runs its first storage calls; its answer (if
    /// any yet) is in `takeover_answer` under the returned takeover id.
    pub(crate) fn start_takeover(
        &mut self,
        m: MachineId,
        reason: TakeoverReason,
    ) -> Result<u64, String> {
        if self.machines[m].state != MachineState::Running {
            return Err("the process is not running".into());
        }
        let keypair = self.machines[m].validator_identity.clone();
        let core = self.machines[m].core.as_mut().ok_or("no process")?;
        let req = TakeoverRequest {
            keypair,
            require_tower: false,
            reason,
        };
        let (id, cmds) = core.begin_takeover(req).map_err(|e| e.to_string())?;
        self.handle(m, cmds);
        Ok(id)
    }

    fn on_takeover_event(&mut self, m: MachineId, ev: TakeoverEvent) {
        let mach = &mut self.machines[m];
        match &ev {
            TakeoverEvent::Switched(sw) => {
                mach.stats.takeovers += 1;
                mach.stats.takeovers_adopted += u64::from(sw.adopted);
                mach.takeover_answer = Some((sw.id, Ok(())));
            }
            TakeoverEvent::Failed { id, error, .. } => {
                mach.takeover_answer = Some((*id, Err(error.to_string())));
            }
            TakeoverEvent::Released { .. } => mach.stats.takeovers_released += 1,
            _ => {}
        }
        if mach.takeover_events.len() == MAX_TAKEOVER_EVENTS {
            mach.takeover_events.remove(0);
        }
        mach.takeover_events.push(ev);
    }

    /// Executes a takeover's storage call now and answers at once, unless a fault makes
    /// the answer late or lost (then it arrives as a timeout, a slot later).
    fn storage_call(&mut self, m: MachineId, call: StorageCall) {
        let cut = self.machines[m].storage_cut;
        let unreachable =
            || StorageProblem::Unavailable("this machine cannot reach storage".into());
        let answer = match call.op {
            StorageOp::LoadTower { identity } => {
                let recent = self.machines[m].acquired_recently;
                let fail = recent && self.call_fault(self.cfg.faults.load_after_acquire_fails);
                let r = if cut || fail {
                    Err(StorageProblem::Unavailable("the load timed out".into()))
                } else {
                    self.storage.load_now(&identity).map_err(|e| problem(&e))
                };
                if r.is_ok() {
                    self.machines[m].acquired_recently = false;
                }
                Some(StorageAnswer::Tower(r))
            }
            StorageOp::Acquire {
                identity,
                reason,
                sent_ms,
            } => {
                let owner = self.owner(m, identity, reason, sent_ms);
                if cut {
                    Some(StorageAnswer::Acquired(Err(unreachable())))
                } else {
                    self.acquire(m, identity, owner)
                }
            }
            StorageOp::LockHolder { identity } => {
                let r = if cut {
                    Err(unreachable())
                } else {
                    self.storage
                        .lock_holder_now(&identity)
                        .map_err(|e| problem(&e))
                };
                let r = r.map(|record| {
                    let mach = &mut self.machines[m];
                    record.map(|r| {
                        if r.owner.instance_id == mach.instance_id() {
                            if let Some(lease) = Lease::adopt(&r) {
                                mach.leases.insert(lease.revision(), lease);
                            }
                        }
                        LockHolder {
                            held: r.is_held(),
                            instance_id: r.owner.instance_id,
                            acquired_at_ms: r.owner.acquired_at_ms,
                            revision: r.revision,
                        }
                    })
                });
                Some(StorageAnswer::Holder(r))
            }
            StorageOp::Release { fence, reason } => {
                self.machines[m].acquired_recently = false;
                let lease = self.machines[m].leases.get(&fence.revision).cloned();
                let r = match lease {
                    _ if cut => Err(unreachable()),
                    None => Err(StorageProblem::LockLost("no lease".into())),
                    Some(l) => self
                        .storage
                        .release_now(&l, &reason)
                        .map(|_| ())
                        .map_err(|e| problem(&e)),
                };
                Some(StorageAnswer::Released(r))
            }
            StorageOp::RecordFinished { fence, reason } => {
                let lease = self.machines[m].leases.get(&fence.revision).cloned();
                let r = match lease {
                    _ if cut => Err(unreachable()),
                    None => Err(StorageProblem::LockLost("no lease".into())),
                    Some(l) => self
                        .storage
                        .record_finished_now(&l, &reason)
                        .map(|_| ())
                        .map_err(|e| problem(&e)),
                };
                Some(StorageAnswer::Recorded(r))
            }
        };
        match answer {
            Some(answer) => self.answer_now(m, call.call, answer),
            None => {
                // The caller times out a slot later.
                let at = self.now_ms + self.cfg.slot_ms;
                let incarnation = self.machines[m].incarnation;
                let answer = StorageAnswer::Acquired(Err(StorageProblem::Unavailable(
                    "the acquire timed out".into(),
                )));
                self.push(
                    at,
                    Item::Deliver {
                        to: m,
                        msg: Msg::StorageAnswer {
                            incarnation,
                            call: call.call,
                            answer,
                        },
                    },
                );
            }
        }
    }

    /// An acquire, with the faults that matter here. `None`: the answer is lost (the
    /// acquire may apply now, or later).
    fn acquire(
        &mut self,
        m: MachineId,
        identity: huione_keys::Pubkey,
        owner: LockOwner,
    ) -> Option<StorageAnswer> {
        if self.call_fault(self.cfg.faults.acquire_late) {
            // Stuck on the way: applies a few slots later, if the lock has not moved.
            let Ok(seen) = self.storage.lock_revision_now(&identity) else {
                return Some(StorageAnswer::Acquired(Err(StorageProblem::Unavailable(
                    "storage is down".into(),
                ))));
            };
            let at = self.now_ms + self.rng.range(1, 8) * self.cfg.slot_ms;
            self.push(
                at,
                Item::LateAcquire {
                    identity,
                    owner,
                    seen,
                },
            );
            return None;
        }
        match self.storage.acquire_now(&identity, owner) {
            Ok(lease) => {
                let rev = lease.revision();
                let mach = &mut self.machines[m];
                mach.leases.insert(rev, lease);
                mach.acquired_recently = true;
                if self.call_fault(self.cfg.faults.acquire_answer_lost) {
                    return None;
                }
                Some(StorageAnswer::Acquired(Ok(rev)))
            }
            Err(e) => Some(StorageAnswer::Acquired(Err(problem(&e)))),
        }
    }

    /// A late acquire reaches storage: applied only if the lock has not moved since it
    /// was sent. Its sender never hears of it (it timed out); it finds it in the lock key.
    pub(crate) fn late_acquire(
        &mut self,
        identity: huione_keys::Pubkey,
        owner: LockOwner,
        seen: i64,
    ) {
        let _ = self
            .storage
            .acquire_if_unchanged_now(&identity, owner, seen);
    }

    fn owner(
        &self,
        m: MachineId,
        identity: huione_keys::Pubkey,
        reason: TakeoverReason,
        sent_ms: u64,
    ) -> LockOwner {
        LockOwner {
            identity,
            instance_id: self.machines[m].instance_id(),
            host: format!("machine-{m}"),
            pid: self.machines[m].incarnation as u32,
            acquired_at_ms: sent_ms,
            reason: reason.as_str().to_string(),
            event: LockEvent::Acquired,
            lease_revision: None,
        }
    }

    fn answer_now(&mut self, m: MachineId, call: u64, answer: StorageAnswer) {
        let now = self.local_now(m);
        let Some(core) = self.machines[m].core.as_mut() else {
            return;
        };
        let cmds = core.on_storage_answer(now, call, answer);
        self.handle(m, cmds);
    }
}

/// Takeover events kept per process.
const MAX_TAKEOVER_EVENTS: usize = 64;

/// A storage error as the core sees it (the same mapping as the daemon's).
fn problem(e: &StorageError) -> StorageProblem {
    match e {
        StorageError::LockLost(_) => StorageProblem::LockLost(e.to_string()),
        StorageError::Tower(_) => StorageProblem::BadTower(e.to_string()),
        e if e.is_transient() => StorageProblem::Unavailable(e.to_string()),
        e => StorageProblem::Refused(e.to_string()),
    }
}
