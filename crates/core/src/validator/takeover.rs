//! Taking an identity — start-up, `set-identity`, the watchtower's failover, a restarted
//! primary's reclaim — written once, for every driver.
//!
//! The driver only runs the storage calls the core asks for ([`Command::Storage`]) and
//! hands each answer back ([`Core::on_storage_answer`]); what to call next, what an
//! answer means and what the operator is told ([`Command::Takeover`]) is decided here:
//!
//! ```text
//! begin_takeover ─▶ can_vote_as? ─▶ Load ─▶ verify (and --require-tower)
//!   ─▶ Acquire ─┬─ Ok(rev) ────────────────────────────────▶ Load after acquire
//!               ├─ refused (definite): Failed, lock not taken
//!               └─ unanswered (timeout: may be applied, now or later)
//!                    ─▶ Failed{lock: Resolving} to the caller, then LockHolder …
//!                       own acquire record ─▶ adopt its revision ─▶ Load after acquire
//!                       anything else ─▶ Acquire again (definite, or resolved again)
//! Load after acquire ─▶ verify ─▶ switch the core ─▶ Switched ─▶ StoreTower
//!   (first confirmed store ─▶ RecordFinished: "finished" in the lock history)
//! any failure after the acquire (load unavailable past `takeover_finish_ms`, a bad
//! tower, no stored tower with --require-tower, the switch refused)
//!   ─▶ Release (fenced: only while the lock is still ours) ─▶ Released
//! ```
//!
//! # No half-finished takeover
//!
//! Once an acquire may have been applied, the core owns the outcome until it is one of:
//! the core votes under that lock (switched), or the lock was given up by a fenced release
//! (a `released` record that holds nothing, in the lock key and the history). An
//! unanswered acquire is resolved by reading the lock key: our own record (instance id
//! and the acquire's tag) is adopted; anything else is settled by acquiring again, which
//! also makes a late-applied earlier attempt impossible. Every step retries only
//! transient failures, loading after the acquire is bounded by `takeover_finish_ms`, and
//! the release retries until storage answers: the bound is "once storage answers", since
//! nobody can use a lock while storage does not answer anyway. A takeover in progress refuses a
//! second one (`CoreError::TakeoverInProgress`), so no check failing before a new
//! acquire can abandon a lock the first one took.
//!
//! Safety does not rest on any of this: a half-finished takeover only stops voting (the
//! old holder is fenced out, the new one does not vote). The release is fenced like a
//! store, so it can never take the lock away from a newer holder; an adopted lock record
//! is still compared inside storage on every store.

use huione_keys::{Keypair, Pubkey};
use huione_tower::SavedTower;

use super::{Command, Core, CoreError, IdentityChange, Role};
use crate::fence::{Fence, StoreFailure};

/// Why an identity is taken. Written into the lock record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeoverReason {
    /// The vote account's own node at start, when nobody holds the lock (or when told to
    /// reclaim at once).
    Startup,
    /// `set-identity` over the admin socket.
    SetIdentity,
    /// A restarted primary, once caught up with the cluster.
    Reclaim,
    /// A failover monitor (the simulator's watchtower).
    Monitor,
}

impl TakeoverReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TakeoverReason::Startup => "startup",
            TakeoverReason::SetIdentity => "set-identity",
            TakeoverReason::Reclaim => "reclaim",
            TakeoverReason::Monitor => "monitor",
        }
    }
}

/// "Take this identity."
#[derive(Debug)]
pub struct TakeoverRequest {
    pub keypair: Keypair,
    /// Refuse when no tower is stored for the identity (`--require-tower`).
    pub require_tower: bool,
    pub reason: TakeoverReason,
}

/// A tower-storage call the core needs. The driver runs it against the storage and
/// answers with [`Core::on_storage_answer`] and the same `call`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageCall {
    pub call: u64,
    pub op: StorageOp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageOp {
    /// Read the stored tower (answer: [`StorageAnswer::Tower`]).
    LoadTower { identity: Pubkey },
    /// Take the lock, unconditionally, with an owner record naming this process's
    /// instance id, `reason` and `sent_ms` (as the record's `acquired_at_ms`: how the
    /// core recognises its own acquire in the lock key). Answer: [`StorageAnswer::Acquired`].
    Acquire {
        identity: Pubkey,
        reason: TakeoverReason,
        sent_ms: u64,
    },
    /// Read the lock record (answer: [`StorageAnswer::Holder`]). A driver that finds its
    /// own instance's acquire there keeps a lease for it (`Lease::adopt`): the core may
    /// continue under that revision.
    LockHolder { identity: Pubkey },
    /// Give the lock of `fence` up, fenced (answer: [`StorageAnswer::Released`]).
    Release { fence: Fence, reason: String },
    /// Append "finished" to the lock history, fenced (answer: [`StorageAnswer::Recorded`]).
    RecordFinished { fence: Fence, reason: String },
}

/// A lock record as storage shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockHolder {
    pub instance_id: String,
    /// The owner record's `acquired_at_ms` (for our own acquires: the `sent_ms` we asked for).
    pub acquired_at_ms: u64,
    pub revision: i64,
    /// False for a release record (nobody holds the lock).
    pub held: bool,
}

/// Why a storage call failed, as far as the core is concerned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageProblem {
    /// Unreachable, timed out, out of space: retrying may work; a write may have applied.
    #[error("{0}")]
    Unavailable(String),
    /// The lock is no longer the one the call was fenced by.
    #[error("{0}")]
    LockLost(String),
    /// The stored tower cannot be parsed or verified.
    #[error("{0}")]
    BadTower(String),
    /// Anything else (misconfiguration): retrying will not help.
    #[error("{0}")]
    Refused(String),
}

impl From<StorageProblem> for StoreFailure {
    /// The one mapping of a store's failure: only a lost lock is fatal.
    fn from(p: StorageProblem) -> Self {
        match p {
            StorageProblem::LockLost(d) => StoreFailure::LockLost(d),
            StorageProblem::Unavailable(d)
            | StorageProblem::BadTower(d)
            | StorageProblem::Refused(d) => StoreFailure::Unavailable(d),
        }
    }
}

/// The answer to a [`StorageCall`].
#[derive(Debug)]
pub enum StorageAnswer {
    Tower(Result<Option<SavedTower>, StorageProblem>),
    /// The lease's revision (the fencing token).
    Acquired(Result<i64, StorageProblem>),
    Holder(Result<Option<LockHolder>, StorageProblem>),
    Released(Result<(), StorageProblem>),
    Recorded(Result<(), StorageProblem>),
}

/// Why a takeover did not switch the core.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TakeoverError {
    /// Checked before anything was asked of storage: this node cannot vote as the identity.
    #[error("not taking the lock: {0}")]
    Refused(CoreError),
    #[error("no tower is stored for {0}, and a stored tower is required")]
    TowerRequired(Pubkey),
    #[error("the stored tower failed verification: {0}")]
    TowerInvalid(String),
    /// A read failed; before the acquire nothing was changed.
    #[error("tower storage is unavailable: {0}")]
    StorageUnavailable(String),
    /// Storage refused the acquire: the lock was not taken.
    #[error("{0}")]
    AcquireRefused(String),
    /// The acquire's answer was lost: it may have been applied.
    #[error(
        "{0}; the acquire may still have been applied: this node checks the lock holder \
         and finishes the switch by itself if it was, or gives the lock up"
    )]
    AcquireUnanswered(String),
    /// The core refused the switch after the acquire.
    #[error("the switch failed: {0}")]
    Switch(CoreError),
}

/// What became of the lock when a takeover failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockAfterFailure {
    /// Never taken (failed before the acquire, or storage refused it).
    NotTaken,
    /// The acquire's answer was lost; the core is checking the lock holder and will
    /// report `Switched` (same takeover id) or `Released`.
    Resolving,
    /// The lock was taken; the core is releasing it and will report `Released`.
    Releasing,
}

/// A takeover switched the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switched {
    pub id: u64,
    pub reason: TakeoverReason,
    pub identity: Pubkey,
    pub previous: Pubkey,
    pub revision: i64,
    pub tower_loaded: bool,
    pub tower_root: Option<u64>,
    /// The acquire's answer was lost and the core found its own record in the lock key.
    pub adopted: bool,
}

/// What a takeover reports, for the driver to log and to answer whoever asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TakeoverEvent {
    /// Begun (a reclaim begins on its own): `caught_up` is false for a reclaim that
    /// stopped waiting to catch up.
    Started {
        id: u64,
        reason: TakeoverReason,
        identity: Pubkey,
        caught_up: bool,
    },
    Switched(Switched),
    Failed {
        id: u64,
        reason: TakeoverReason,
        identity: Pubkey,
        error: TakeoverError,
        lock: LockAfterFailure,
    },
    /// The lock taken at `revision` was given up (`detail` says why; `already_gone`: it
    /// had been taken by another instance before the release reached storage).
    Released {
        id: u64,
        identity: Pubkey,
        revision: i64,
        detail: String,
        already_gone: bool,
    },
    /// The first store under the new lock was confirmed and "finished" is being
    /// recorded in the lock history (`recorded`: the record was written).
    Finished {
        id: u64,
        identity: Pubkey,
        revision: i64,
        recorded: Result<(), StorageProblem>,
    },
}

#[derive(Debug)]
enum Stage {
    /// Loading the tower to verify it before taking anything.
    Check,
    Acquire {
        sent_ms: u64,
    },
    /// The acquire's answer was lost: reading the lock holder.
    Resolve {
        sent_ms: u64,
    },
    /// Holding the lock at `revision`: loading the tower to switch with.
    LoadAfter {
        revision: i64,
        adopted: bool,
        since_ms: u64,
    },
    /// Giving the lock at `revision` up.
    Release {
        revision: i64,
        detail: String,
    },
}

/// A takeover in progress.
#[derive(Debug)]
pub(super) struct Takeover {
    id: u64,
    keypair: Keypair,
    require_tower: bool,
    reason: TakeoverReason,
    stage: Stage,
    /// The storage call outstanding, or a retry due at this monotonic time.
    call: Option<u64>,
    /// Whether the caller has had its answer (`Failed` with `Resolving`).
    answered: bool,
    retry_at_ms: Option<u64>,
}

/// A restarted primary waiting to catch up before reclaiming its identity.
#[derive(Debug)]
pub(super) struct PendingReclaim {
    keypair: Keypair,
    since_ms: u64,
    /// After a failed reclaim, the next try waits until this monotonic time.
    not_before_ms: u64,
}

/// A failed reclaim tries again after this long.
const RECLAIM_RETRY_MS: u64 = 1_000;

/// "Finished" is recorded after the first confirmed store under the new lock.
#[derive(Debug)]
pub(super) struct FinishMark {
    pub(super) takeover: u64,
}

impl Core {
    /// Starts taking `req.keypair`'s identity. The answer comes as
    /// [`TakeoverEvent::Switched`] or [`TakeoverEvent::Failed`] (with the returned id);
    /// storage calls come as [`Command::Storage`]. Refused at once (nothing asked of
    /// storage) when this core cannot vote as the identity, is leaving, cannot record
    /// ([`Core::set_recording`]), or another takeover is in progress.
    pub fn begin_takeover(
        &mut self,
        req: TakeoverRequest,
    ) -> Result<(u64, Vec<Command>), CoreError> {
        if let Some(t) = &self.takeover {
            return Err(CoreError::TakeoverInProgress(t.keypair.pubkey()));
        }
        if !self.recording {
            return Err(CoreError::CannotRecord);
        }
        self.can_vote_as(&req.keypair)?;
        let id = self.start_takeover(req, true);
        Ok((id, self.take_outbox()))
    }

    fn start_takeover(&mut self, req: TakeoverRequest, caught_up: bool) -> u64 {
        self.next_takeover_id += 1;
        let id = self.next_takeover_id;
        let identity = req.keypair.pubkey();
        self.outbox.push(Command::Takeover(TakeoverEvent::Started {
            id,
            reason: req.reason,
            identity,
            caught_up,
        }));
        self.takeover = Some(Box::new(Takeover {
            id,
            keypair: req.keypair,
            require_tower: req.require_tower,
            reason: req.reason,
            stage: Stage::Check,
            call: None,
            answered: false,
            retry_at_ms: None,
        }));
        self.issue_takeover_call();
        id
    }

    /// The identity a takeover in progress is taking.
    pub fn takeover_in_progress(&self) -> Option<Pubkey> {
        self.takeover.as_ref().map(|t| t.keypair.pubkey())
    }

    /// A restarted primary: take `keypair`'s identity once this node has caught up with
    /// the cluster (or after `reclaim_catch_up_limit_ms` without), while the driver's
    /// gate ([`Core::set_reclaim_gate`]) is open and it can record
    /// ([`Core::set_recording`]). A failed reclaim waits and tries again.
    pub fn reclaim_when_caught_up(&mut self, keypair: Keypair) {
        self.pending_reclaim = Some(PendingReclaim {
            keypair,
            since_ms: self.mono_ms,
            not_before_ms: 0,
        });
    }

    /// Whether a reclaim is waiting.
    pub fn reclaim_pending(&self) -> bool {
        self.pending_reclaim.is_some()
    }

    /// The driver's own condition for a reclaim (the daemon: enough of the cluster is
    /// visible in gossip). Open by default.
    pub fn set_reclaim_gate(&mut self, open: bool) {
        self.reclaim_gate = open;
    }

    /// Called from `tick`: begins a due reclaim, re-issues a due storage call, ends a
    /// resolve or a load that ran past its bound.
    pub(super) fn drive_takeover(&mut self, now_ms: u64) {
        self.maybe_begin_reclaim(now_ms);
        let mono = self.mono_ms;
        let Some(t) = &mut self.takeover else { return };
        if t.call.is_none() && t.retry_at_ms.is_some_and(|at| mono >= at) {
            t.retry_at_ms = None;
            self.issue_takeover_call();
        }
    }

    fn maybe_begin_reclaim(&mut self, now_ms: u64) {
        let Some(p) = &self.pending_reclaim else {
            return;
        };
        // A node that cannot record waits: it could not vote for the identity anyway.
        if self.takeover.is_some()
            || !self.reclaim_gate
            || !self.recording
            || self.mono_ms < p.not_before_ms
        {
            return;
        }
        let caught_up = self.caught_up(now_ms);
        let waited = self.mono_ms.saturating_sub(p.since_ms);
        if !caught_up && waited <= self.cfg.reclaim_catch_up_limit_ms {
            return;
        }
        let p = self.pending_reclaim.take().expect("checked above");
        if let Err(e) = self.can_vote_as(&p.keypair) {
            // Not a passing condition (no vote account, no key): stop waiting, say why.
            let identity = p.keypair.pubkey();
            self.next_takeover_id += 1;
            self.outbox.push(Command::Takeover(TakeoverEvent::Failed {
                id: self.next_takeover_id,
                reason: TakeoverReason::Reclaim,
                identity,
                error: TakeoverError::Refused(e),
                lock: LockAfterFailure::NotTaken,
            }));
            return;
        }
        let req = TakeoverRequest {
            keypair: p.keypair,
            require_tower: false,
            reason: TakeoverReason::Reclaim,
        };
        self.start_takeover(req, caught_up);
    }

    /// Emits the storage call of the current stage.
    fn issue_takeover_call(&mut self) {
        let Some(t) = &mut self.takeover else { return };
        self.next_storage_call += 1;
        let call = self.next_storage_call;
        let identity = t.keypair.pubkey();
        let op = match &t.stage {
            Stage::Check | Stage::LoadAfter { .. } => StorageOp::LoadTower { identity },
            Stage::Acquire { sent_ms } => StorageOp::Acquire {
                identity,
                reason: t.reason,
                sent_ms: *sent_ms,
            },
            Stage::Resolve { .. } => StorageOp::LockHolder { identity },
            Stage::Release { revision, detail } => StorageOp::Release {
                fence: Fence {
                    identity,
                    revision: *revision,
                },
                reason: detail.clone(),
            },
        };
        t.call = Some(call);
        self.outbox.push(Command::Storage(StorageCall { call, op }));
    }

    /// The driver hands back the answer to a [`StorageCall`].
    pub fn on_storage_answer(
        &mut self,
        now_ms: u64,
        call: u64,
        answer: StorageAnswer,
    ) -> Vec<Command> {
        if let StorageAnswer::Recorded(result) = answer {
            self.on_finish_recorded(call, result);
            return self.take_outbox();
        }
        let current = self.takeover.as_ref().is_some_and(|t| t.call == Some(call));
        if !current {
            return self.take_outbox();
        }
        let t = self.takeover.as_mut().expect("checked above");
        t.call = None;
        match answer {
            StorageAnswer::Tower(r) => self.on_tower_answer(now_ms, r),
            StorageAnswer::Acquired(r) => self.on_acquire_answer(r),
            StorageAnswer::Holder(r) => self.on_holder_answer(r),
            StorageAnswer::Released(r) => self.on_release_answer(r),
            StorageAnswer::Recorded(_) => unreachable!("handled above"),
        }
        self.take_outbox()
    }

    fn retry_later(&mut self) {
        let at = self.mono_ms + self.cfg.takeover_retry_ms;
        if let Some(t) = &mut self.takeover {
            t.retry_at_ms = Some(at);
        }
    }

    fn on_tower_answer(&mut self, now_ms: u64, r: Result<Option<SavedTower>, StorageProblem>) {
        let t = self.takeover.as_ref().expect("a takeover answers");
        let identity = t.keypair.pubkey();
        match (&t.stage, r) {
            (Stage::Check, Err(StorageProblem::BadTower(e))) => {
                self.takeover_failed(TakeoverError::TowerInvalid(e), LockAfterFailure::NotTaken)
            }
            (Stage::Check, Err(e)) => self.takeover_failed(
                TakeoverError::StorageUnavailable(e.to_string()),
                LockAfterFailure::NotTaken,
            ),
            (Stage::Check, Ok(tower)) => {
                if let Err(e) = self.check_tower(&identity, t.require_tower, tower.as_ref()) {
                    return self.takeover_failed(e, LockAfterFailure::NotTaken);
                }
                let sent_ms = self.acquire_tag(now_ms);
                self.takeover.as_mut().expect("in progress").stage = Stage::Acquire { sent_ms };
                self.issue_takeover_call();
            }
            (
                Stage::LoadAfter {
                    since_ms, revision, ..
                },
                Err(StorageProblem::Unavailable(e)),
            ) => {
                let (since_ms, revision) = (*since_ms, *revision);
                if self.mono_ms.saturating_sub(since_ms) > self.cfg.takeover_finish_ms {
                    let detail = format!(
                        "the tower could not be loaded after the acquire within {} ms: {e}",
                        self.cfg.takeover_finish_ms
                    );
                    self.release_after(revision, TakeoverError::StorageUnavailable(e), detail);
                } else {
                    self.retry_later();
                }
            }
            (Stage::LoadAfter { revision, .. }, Err(e)) => {
                let revision = *revision;
                let detail = format!("the tower loaded after the acquire cannot be used: {e}");
                let error = match e {
                    StorageProblem::BadTower(e) => TakeoverError::TowerInvalid(e),
                    other => TakeoverError::StorageUnavailable(other.to_string()),
                };
                self.release_after(revision, error, detail);
            }
            (
                Stage::LoadAfter {
                    revision, adopted, ..
                },
                Ok(tower),
            ) => {
                let (revision, adopted) = (*revision, *adopted);
                if let Err(e) = self.check_tower(&identity, t.require_tower, tower.as_ref()) {
                    let detail = format!("the tower loaded after the acquire: {e}");
                    return self.release_after(revision, e, detail);
                }
                self.finish_switch(now_ms, revision, adopted, tower);
            }
            _ => {}
        }
    }

    /// The acquire's owner-record tag: unique per takeover of this process (monotonic
    /// time, bumped past the last one), so the core can tell its own acquire in the lock
    /// key from an earlier one.
    fn acquire_tag(&mut self, now_ms: u64) -> u64 {
        let tag = now_tag(self.last_acquire_tag, now_ms);
        self.last_acquire_tag = tag;
        tag
    }

    /// Verifies a loaded tower against `identity` (and --require-tower).
    fn check_tower(
        &self,
        identity: &Pubkey,
        require_tower: bool,
        tower: Option<&SavedTower>,
    ) -> Result<(), TakeoverError> {
        match tower {
            None if require_tower => Err(TakeoverError::TowerRequired(*identity)),
            None => Ok(()),
            Some(saved) => saved
                .verify_with(identity, |k, m, s| self.verifier.verify(k, m, s))
                .map(|_| ())
                .map_err(|e| TakeoverError::TowerInvalid(e.to_string())),
        }
    }

    fn on_acquire_answer(&mut self, r: Result<i64, StorageProblem>) {
        let t = self.takeover.as_mut().expect("a takeover answers");
        let Stage::Acquire { sent_ms } = t.stage else {
            return;
        };
        match r {
            Ok(revision) => {
                t.stage = Stage::LoadAfter {
                    revision,
                    adopted: false,
                    since_ms: self.mono_ms,
                };
                self.issue_takeover_call();
            }
            Err(StorageProblem::Unavailable(e)) => {
                let (id, reason, identity) = (t.id, t.reason, t.keypair.pubkey());
                t.stage = Stage::Resolve { sent_ms };
                // The caller hears of it once; the core goes on by itself.
                if !std::mem::replace(&mut t.answered, true) {
                    self.outbox.push(Command::Takeover(TakeoverEvent::Failed {
                        id,
                        reason,
                        identity,
                        error: TakeoverError::AcquireUnanswered(e),
                        lock: LockAfterFailure::Resolving,
                    }));
                }
                self.issue_takeover_call();
            }
            Err(e) => self.takeover_failed(
                TakeoverError::AcquireRefused(e.to_string()),
                LockAfterFailure::NotTaken,
            ),
        }
    }

    fn on_holder_answer(&mut self, r: Result<Option<LockHolder>, StorageProblem>) {
        let mono = self.mono_ms;
        let instance_id = self.cfg.instance_id.clone();
        let t = self.takeover.as_mut().expect("a takeover answers");
        let Stage::Resolve { sent_ms } = t.stage else {
            return;
        };
        let holder = match r {
            Ok(h) => h,
            Err(_) => return self.retry_later(),
        };
        let ours = holder
            .as_ref()
            .filter(|h| h.held && h.instance_id == instance_id && h.acquired_at_ms == sent_ms);
        if let Some(h) = ours {
            t.stage = Stage::LoadAfter {
                revision: h.revision,
                adopted: true,
                since_ms: mono,
            };
            return self.issue_takeover_call();
        }
        // Not (yet) applied. A late attempt could still apply while the lock key keeps
        // the revision it was guarded by, so settle it: acquire again, now that storage
        // answers. That write moves the lock key, after which no earlier attempt of ours
        // can apply (etcd guards each on the lock's revision as seen; the simulator's
        // model too), and its own answer is definite or resolved the same way.
        let tag = now_tag(self.last_acquire_tag, sent_ms);
        self.last_acquire_tag = tag;
        let t = self.takeover.as_mut().expect("in progress");
        t.stage = Stage::Acquire { sent_ms: tag };
        self.issue_takeover_call();
    }

    fn on_release_answer(&mut self, r: Result<(), StorageProblem>) {
        let t = self.takeover.as_ref().expect("a takeover answers");
        let Stage::Release { revision, detail } = &t.stage else {
            return;
        };
        let already_gone = match r {
            Ok(()) => false,
            Err(StorageProblem::LockLost(_)) => true,
            Err(_) => return self.retry_later(),
        };
        let event = TakeoverEvent::Released {
            id: t.id,
            identity: t.keypair.pubkey(),
            revision: *revision,
            detail: detail.clone(),
            already_gone,
        };
        self.end_takeover();
        self.outbox.push(Command::Takeover(event));
    }

    /// Ends the takeover in progress without a switch: a reclaim waits and tries again.
    fn end_takeover(&mut self) -> Box<Takeover> {
        let t = self.takeover.take().expect("a takeover ends");
        if t.reason == TakeoverReason::Reclaim {
            self.pending_reclaim = Some(PendingReclaim {
                keypair: t.keypair.clone(),
                since_ms: self.mono_ms,
                not_before_ms: self.mono_ms + RECLAIM_RETRY_MS,
            });
        }
        t
    }

    /// Ends the takeover before (or without) taking the lock.
    fn takeover_failed(&mut self, error: TakeoverError, lock: LockAfterFailure) {
        debug_assert_eq!(lock, LockAfterFailure::NotTaken);
        let t = self.end_takeover();
        self.outbox.push(Command::Takeover(TakeoverEvent::Failed {
            id: t.id,
            reason: t.reason,
            identity: t.keypair.pubkey(),
            error,
            lock,
        }));
    }

    /// The lock at `revision` is ours but the switch cannot happen: say so, release it.
    fn release_after(&mut self, revision: i64, error: TakeoverError, detail: String) {
        let t = self.takeover.as_mut().expect("a takeover fails");
        // An answer already given (an unanswered acquire) is not repeated.
        let answered = std::mem::replace(&mut t.answered, true);
        let (id, reason, identity) = (t.id, t.reason, t.keypair.pubkey());
        t.stage = Stage::Release { revision, detail };
        if !answered {
            self.outbox.push(Command::Takeover(TakeoverEvent::Failed {
                id,
                reason,
                identity,
                error,
                lock: LockAfterFailure::Releasing,
            }));
        }
        self.issue_takeover_call();
    }

    /// Switches the core to the identity under the lock at `revision`.
    fn finish_switch(
        &mut self,
        now_ms: u64,
        revision: i64,
        adopted: bool,
        tower: Option<SavedTower>,
    ) {
        let t = self.takeover.as_ref().expect("a takeover switches");
        let (id, reason, identity) = (t.id, t.reason, t.keypair.pubkey());
        let previous = self.identity.pubkey();
        let tower_loaded = tower.is_some();
        let change = IdentityChange {
            keypair: t.keypair.clone(),
            tower,
            fence: Fence { identity, revision },
        };
        let at = self.outbox.len();
        if let Err(e) = self.switch_identity(now_ms, change) {
            let detail = format!("the core refused the switch: {e}");
            return self.release_after(revision, TakeoverError::Switch(e), detail);
        }
        self.takeover = None;
        let tower_root = self.tower().and_then(|t| t.root());
        if let Role::Voting(v) = &mut self.role {
            v.finish_mark = Some(FinishMark { takeover: id });
        }
        // Before the switch's own commands: the driver installs the lease and the gossip
        // identity first, then runs the store.
        let event = TakeoverEvent::Switched(Switched {
            id,
            reason,
            identity,
            previous,
            revision,
            tower_loaded,
            tower_root,
            adopted,
        });
        self.outbox.insert(at, Command::Takeover(event));
    }

    /// After the first confirmed store under a new lock: record "finished".
    pub(super) fn record_finished(&mut self) {
        let Role::Voting(v) = &mut self.role else {
            return;
        };
        let Some(mark) = v.finish_mark.take() else {
            return;
        };
        self.next_storage_call += 1;
        let call = self.next_storage_call;
        self.finishing.push((call, mark.takeover, v.fence));
        if self.finishing.len() > MAX_FINISHING {
            self.finishing.remove(0);
        }
        self.outbox.push(Command::Storage(StorageCall {
            call,
            op: StorageOp::RecordFinished {
                fence: v.fence,
                reason: "switched: the first tower store under this lock was confirmed".into(),
            },
        }));
    }

    fn on_finish_recorded(&mut self, call: u64, recorded: Result<(), StorageProblem>) {
        let Some(i) = self.finishing.iter().position(|(c, _, _)| *c == call) else {
            return;
        };
        let (_, id, fence) = self.finishing.remove(i);
        self.outbox.push(Command::Takeover(TakeoverEvent::Finished {
            id,
            identity: fence.identity,
            revision: fence.revision,
            recorded,
        }));
    }

    /// A store report under a fence a takeover in progress is replacing (same identity,
    /// its acquire sent) is stale: the old lock may have been taken by this very process.
    pub(super) fn store_superseded(&self, fence: &Fence) -> bool {
        self.acquire_unsettled(&fence.identity)
    }

    /// True while a takeover of `identity` has sent an acquire that may have been applied
    /// and has not ended: the lock this process will hold is not known yet.
    pub(super) fn acquire_unsettled(&self, identity: &Pubkey) -> bool {
        self.takeover.as_ref().is_some_and(|t| {
            t.keypair.pubkey() == *identity
                && matches!(
                    t.stage,
                    Stage::Acquire { .. }
                        | Stage::Resolve { .. }
                        | Stage::LoadAfter { .. }
                        | Stage::Release { .. }
                )
        })
    }
}

/// A fresh acquire tag: `now_ms`, but above every earlier one.
fn now_tag(last: u64, now_ms: u64) -> u64 {
    now_ms.max(last + 1)
}

/// "Finished" records awaiting their answer, at most.
const MAX_FINISHING: usize = 8;
