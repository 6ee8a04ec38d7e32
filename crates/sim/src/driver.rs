//! The simulated driver: executes a core's commands against the simulated network and
//! storage, and feeds events back. This is the part the real daemon replaces.

use huione_core::audit::{AuditRecord, BlockRecord, VoteRecord};
use huione_core::{Command, ExitReason, Fence, IdentityChange, StoreFailure, StoreTicket};
use huione_tower_storage::{LockOwner, StorageError};

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
        let Some(lease) = mach.leases.get(&ticket.fence().revision).cloned() else {
            return;
        };
        let result = if mach.storage_cut {
            Err(StoreFailure::Unavailable(
                "this machine cannot reach storage".into(),
            ))
        } else {
            match self.storage.store_now(&lease, ticket.tower()) {
                Ok(receipt) => Ok(receipt),
                Err(e) if e.is_lock_lost() => Err(StoreFailure::LockLost(e.to_string())),
                Err(e) => Err(StoreFailure::Unavailable(e.to_string())),
            }
        };
        let stats = &mut self.machines[m].stats;
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
                ticket.confirmed(receipt)
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

    /// Acquire the lock for the validator identity, load its tower, hand both to the
    /// core (the set-identity admin command, or a primary's reclaim).
    pub fn take_identity(&mut self, m: MachineId, reason: &str) -> Result<(), String> {
        if self.machines[m].state != MachineState::Running {
            return Err("the process is not running".into());
        }
        if self.machines[m].storage_cut {
            return Err("cannot reach tower storage".into());
        }
        let keypair = self.machines[m].validator_identity.clone();
        let identity = keypair.pubkey();
        let owner = LockOwner {
            identity,
            instance_id: self.machines[m].instance_id(),
            host: format!("machine-{m}"),
            pid: self.machines[m].incarnation as u32,
            acquired_at_ms: self.now_ms,
            reason: reason.to_string(),
            event: huione_tower_storage::LockEvent::Acquired,
            lease_revision: None,
        };
        let lease = self
            .storage
            .acquire_now(&identity, owner)
            .map_err(|e| e.to_string())?;
        let tower = self
            .storage
            .load_now(&identity)
            .map_err(|e: StorageError| e.to_string())?;
        let fence = Fence {
            identity,
            revision: lease.revision(),
        };
        self.machines[m].leases.insert(lease.revision(), lease);
        let now = self.local_now(m);
        let core = self.machines[m].core.as_mut().ok_or("no process")?;
        let cmds = core
            .set_identity(
                now,
                IdentityChange {
                    keypair,
                    tower,
                    fence,
                },
            )
            .map_err(|e| e.to_string())?;
        self.machines[m].stats.takeovers += 1;
        self.handle(m, cmds);
        Ok(())
    }
}
