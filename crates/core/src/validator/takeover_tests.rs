//! The takeover's command sequences: the exact storage calls, the answers that end it,
//! and no takeover left half-finished (every path after an acquire ends switched,
//! released, or shown not applied).

use std::sync::Arc;

use huione_keys::Keypair;
use huione_tower::{SavedTower, Tower};

use super::*;
use crate::block::Ed25519Verifier;

/// A standby: its own identity `own`, the validator identity `id` as authorized voter.
fn standby() -> (Core, Keypair) {
    let id = Keypair::from_secret(&[1; 32]);
    let own = Keypair::from_secret(&[2; 32]);
    let vote_account = Pubkey::from_seed_byte(50);
    let genesis = super::tests::one_validator_genesis(&id, vote_account);
    let cfg = CoreConfig::new(&genesis, vote_account, vec![id.clone()], "standby-1".into());
    let core = Core::new(genesis, cfg, own, Arc::new(Ed25519Verifier), None, 0);
    (core, id)
}

fn request(id: &Keypair) -> TakeoverRequest {
    TakeoverRequest {
        keypair: id.clone(),
        require_tower: false,
        reason: TakeoverReason::SetIdentity,
    }
}

fn stored(id: &Keypair, slots: &[u64]) -> SavedTower {
    let mut t = Tower::new(id.pubkey());
    for &s in slots {
        t.record_vote(s, [s as u8; 32], 1_000 + s);
    }
    SavedTower::new(&t, id).unwrap()
}

/// The single storage call among `cmds`.
fn call(cmds: &[Command]) -> StorageCall {
    let calls: Vec<_> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Storage(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1, "{cmds:?}");
    calls.into_iter().next().unwrap()
}

fn events(cmds: &[Command]) -> Vec<TakeoverEvent> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Takeover(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Stores the ticket's tower in a real in-memory store under its fence (padded to its
/// revision) and confirms it with the receipt.
fn confirm(ticket: crate::fence::StoreTicket) -> crate::fence::StoreReport {
    use huione_tower_storage::{LockOwner, MemoryTowerStorage};
    let fence = ticket.fence();
    let s = MemoryTowerStorage::new();
    s.with_kv(|kv| {
        while kv.revision() + 1 < fence.revision {
            kv.put("/pad", Vec::new());
        }
    });
    let owner = LockOwner::new(fence.identity, "standby-1", "test");
    let lease = s.acquire_now(&fence.identity, owner).unwrap();
    assert_eq!(lease.revision(), fence.revision);
    let receipt = s.store_now(&lease, ticket.tower()).unwrap();
    let report = ticket.confirmed(receipt);
    assert!(report.is_confirmed());
    report
}

fn unavailable() -> StorageProblem {
    StorageProblem::Unavailable("request timed out".into())
}

/// Ticks every 10 ms from `from` to `to`, answering nothing; returns the commands.
fn tick(core: &mut Core, from: u64, to: u64) -> Vec<Command> {
    (from..=to).step_by(10).flat_map(|t| core.tick(t)).collect()
}

#[test]
fn a_takeover_checks_loads_acquires_loads_again_switches_and_records_finished() {
    let (mut core, id) = standby();
    let (tid, cmds) = core.begin_takeover(request(&id)).unwrap();
    assert!(matches!(events(&cmds)[0], TakeoverEvent::Started { id: i, .. } if i == tid));
    let c = call(&cmds);
    assert_eq!(
        c.op,
        StorageOp::LoadTower {
            identity: id.pubkey()
        }
    );
    let tower = stored(&id, &[1, 2]);
    let cmds = core.on_storage_answer(10, c.call, StorageAnswer::Tower(Ok(Some(tower.clone()))));
    let c = call(&cmds);
    let StorageOp::Acquire {
        sent_ms, reason, ..
    } = c.op
    else {
        panic!("{c:?}")
    };
    assert_eq!(reason, TakeoverReason::SetIdentity);
    assert!(!core.status().voting, "nothing switches before the acquire");
    let cmds = core.on_storage_answer(20, c.call, StorageAnswer::Acquired(Ok(7)));
    let c = call(&cmds);
    assert_eq!(
        c.op,
        StorageOp::LoadTower {
            identity: id.pubkey()
        }
    );
    assert!(sent_ms > 0);
    let cmds = core.on_storage_answer(30, c.call, StorageAnswer::Tower(Ok(Some(tower))));
    // Switched first (the driver installs the lease), then the store proving the lock.
    let Command::Takeover(TakeoverEvent::Switched(sw)) = &cmds[0] else {
        panic!("{cmds:?}")
    };
    assert_eq!((sw.id, sw.revision, sw.adopted), (tid, 7, false));
    assert!(sw.tower_loaded);
    let ticket = cmds
        .into_iter()
        .find_map(|c| match c {
            Command::StoreTower(t) => Some(t),
            _ => None,
        })
        .expect("a store under the new lock");
    assert_eq!(ticket.fence().revision, 7);
    assert_eq!(core.status().fence.map(|f| f.revision), Some(7));
    let cmds = core.on_store_report(40, confirm(ticket));
    let c = call(&cmds);
    assert!(
        matches!(&c.op, StorageOp::RecordFinished { fence, .. } if fence.revision == 7),
        "{c:?}"
    );
    let cmds = core.on_storage_answer(50, c.call, StorageAnswer::Recorded(Ok(())));
    assert!(matches!(
        events(&cmds)[..],
        [TakeoverEvent::Finished {
            revision: 7,
            recorded: Ok(()),
            ..
        }]
    ));
    assert_eq!(core.takeover_in_progress(), None);
}

#[test]
fn refusals_before_the_acquire_take_nothing() {
    let (mut core, id) = standby();
    // Not this node's vote account: refused before anything is asked of storage.
    let other = Keypair::from_secret(&[9; 32]);
    assert!(core.begin_takeover(request(&other)).is_err());
    // --require-tower with nothing stored.
    let (_, cmds) = core
        .begin_takeover(TakeoverRequest {
            require_tower: true,
            ..request(&id)
        })
        .unwrap();
    let cmds = core.on_storage_answer(10, call(&cmds).call, StorageAnswer::Tower(Ok(None)));
    assert!(matches!(
        events(&cmds)[..],
        [TakeoverEvent::Failed {
            error: TakeoverError::TowerRequired(_),
            lock: LockAfterFailure::NotTaken,
            ..
        }]
    ));
    assert!(cmds.iter().all(|c| !matches!(c, Command::Storage(_))));
    // A tower signed by someone else.
    let (_, cmds) = core.begin_takeover(request(&id)).unwrap();
    let forged = stored(&other, &[1]);
    let cmds = core.on_storage_answer(20, call(&cmds).call, StorageAnswer::Tower(Ok(Some(forged))));
    assert!(matches!(
        events(&cmds)[..],
        [TakeoverEvent::Failed {
            error: TakeoverError::TowerInvalid(_),
            lock: LockAfterFailure::NotTaken,
            ..
        }]
    ));
    assert!(!core.status().voting);
}

/// The acquire's answer is lost, but storage applied it: the core finds its own record
/// in the lock key and finishes the switch by itself.
#[test]
fn an_unanswered_acquire_found_in_the_lock_key_finishes_the_switch() {
    let (mut core, id) = standby();
    let (tid, cmds) = core.begin_takeover(request(&id)).unwrap();
    let cmds = core.on_storage_answer(10, call(&cmds).call, StorageAnswer::Tower(Ok(None)));
    let c = call(&cmds);
    let StorageOp::Acquire { sent_ms, .. } = c.op else {
        panic!()
    };
    let cmds = core.on_storage_answer(20, c.call, StorageAnswer::Acquired(Err(unavailable())));
    assert!(matches!(
        events(&cmds)[..],
        [TakeoverEvent::Failed {
            error: TakeoverError::AcquireUnanswered(_),
            lock: LockAfterFailure::Resolving,
            ..
        }]
    ));
    // Another takeover is refused while this one is unresolved.
    assert!(matches!(
        core.begin_takeover(request(&id)),
        Err(CoreError::TakeoverInProgress(_))
    ));
    let c = call(&cmds);
    assert_eq!(
        c.op,
        StorageOp::LockHolder {
            identity: id.pubkey()
        }
    );
    // Storage still does not answer: the check is retried.
    assert!(core
        .on_storage_answer(30, c.call, StorageAnswer::Holder(Err(unavailable())))
        .is_empty());
    let c = call(&tick(&mut core, 40, 400));
    // An older record of this very instance is not this acquire: acquire again.
    let old = LockHolder {
        instance_id: "standby-1".into(),
        acquired_at_ms: sent_ms - 1,
        revision: 3,
        held: true,
    };
    let cmds = core.on_storage_answer(410, c.call, StorageAnswer::Holder(Ok(Some(old))));
    let c = call(&cmds);
    let StorageOp::Acquire { sent_ms, .. } = c.op else {
        panic!("{c:?}")
    };
    // Unanswered again; this time the lock key holds it.
    let cmds = core.on_storage_answer(420, c.call, StorageAnswer::Acquired(Err(unavailable())));
    assert!(
        events(&cmds).is_empty(),
        "the caller was answered once: {cmds:?}"
    );
    let ours = LockHolder {
        instance_id: "standby-1".into(),
        acquired_at_ms: sent_ms,
        revision: 9,
        held: true,
    };
    let cmds = core.on_storage_answer(810, call(&cmds).call, StorageAnswer::Holder(Ok(Some(ours))));
    let c = call(&cmds);
    assert_eq!(
        c.op,
        StorageOp::LoadTower {
            identity: id.pubkey()
        }
    );
    let cmds = core.on_storage_answer(820, c.call, StorageAnswer::Tower(Ok(None)));
    let Some(TakeoverEvent::Switched(sw)) = events(&cmds).into_iter().next() else {
        panic!("{cmds:?}")
    };
    assert_eq!((sw.id, sw.revision, sw.adopted), (tid, 9, true));
    assert!(core.status().voting);
}

/// The acquire's answer is lost and the lock key shows another holder: the core acquires
/// again (a definite write that also keeps the lost attempt from applying later).
#[test]
fn an_unanswered_acquire_not_found_in_the_lock_key_is_sent_again() {
    let (mut core, id) = standby();
    let (tid, cmds) = core.begin_takeover(request(&id)).unwrap();
    let cmds = core.on_storage_answer(10, call(&cmds).call, StorageAnswer::Tower(Ok(None)));
    let c = call(&cmds);
    let StorageOp::Acquire { sent_ms: first, .. } = c.op else {
        panic!()
    };
    let cmds = core.on_storage_answer(20, c.call, StorageAnswer::Acquired(Err(unavailable())));
    let primary = LockHolder {
        instance_id: "primary-1".into(),
        acquired_at_ms: first,
        revision: 2,
        held: true,
    };
    let cmds = core.on_storage_answer(
        30,
        call(&cmds).call,
        StorageAnswer::Holder(Ok(Some(primary))),
    );
    let c = call(&cmds);
    let StorageOp::Acquire {
        sent_ms: second, ..
    } = c.op
    else {
        panic!("{c:?}")
    };
    assert!(
        second > first,
        "a new tag: the lost attempt is not mistaken for this one"
    );
    let cmds = core.on_storage_answer(40, c.call, StorageAnswer::Acquired(Ok(5)));
    let cmds = core.on_storage_answer(50, call(&cmds).call, StorageAnswer::Tower(Ok(None)));
    let Some(TakeoverEvent::Switched(sw)) = events(&cmds).into_iter().next() else {
        panic!("{cmds:?}")
    };
    assert_eq!((sw.id, sw.revision, sw.adopted), (tid, 5, false));
}

/// After the acquire, a tower that fails verification releases the lock (fenced, by
/// the revision acquired); a release storage does not answer is retried.
#[test]
fn a_bad_tower_after_the_acquire_releases_the_lock() {
    let (mut core, id) = standby();
    let (tid, cmds) = core.begin_takeover(request(&id)).unwrap();
    let cmds = core.on_storage_answer(10, call(&cmds).call, StorageAnswer::Tower(Ok(None)));
    let cmds = core.on_storage_answer(20, call(&cmds).call, StorageAnswer::Acquired(Ok(11)));
    let cmds = core.on_storage_answer(
        30,
        call(&cmds).call,
        StorageAnswer::Tower(Err(StorageProblem::BadTower("bad signature".into()))),
    );
    assert!(matches!(
        events(&cmds)[..],
        [TakeoverEvent::Failed {
            error: TakeoverError::TowerInvalid(_),
            lock: LockAfterFailure::Releasing,
            ..
        }]
    ));
    let c = call(&cmds);
    assert!(
        matches!(&c.op, StorageOp::Release { fence, .. } if fence.revision == 11 && fence.identity == id.pubkey()),
        "{c:?}"
    );
    assert!(core
        .on_storage_answer(40, c.call, StorageAnswer::Released(Err(unavailable())))
        .is_empty());
    let c = call(&tick(&mut core, 50, 400));
    assert!(matches!(c.op, StorageOp::Release { .. }));
    let cmds = core.on_storage_answer(410, c.call, StorageAnswer::Released(Ok(())));
    assert!(matches!(
        &events(&cmds)[..],
        [TakeoverEvent::Released { id, revision: 11, already_gone: false, .. }] if *id == tid
    ));
    assert!(!core.status().voting);
    assert_eq!(core.takeover_in_progress(), None);
}

/// A tower that cannot be loaded after the acquire is retried for `takeover_finish_ms`,
/// then the lock is released (a release that finds the lock taken by another is done).
#[test]
fn a_load_failing_after_the_acquire_releases_within_the_bound() {
    let (mut core, id) = standby();
    let bound = core.cfg.takeover_finish_ms;
    let (_, cmds) = core.begin_takeover(request(&id)).unwrap();
    let cmds = core.on_storage_answer(10, call(&cmds).call, StorageAnswer::Tower(Ok(None)));
    let cmds = core.on_storage_answer(20, call(&cmds).call, StorageAnswer::Acquired(Ok(4)));
    let mut c = call(&cmds);
    let mut now = 30;
    let release = loop {
        assert!(matches!(c.op, StorageOp::LoadTower { .. }), "{c:?}");
        let cmds = core.on_storage_answer(now, c.call, StorageAnswer::Tower(Err(unavailable())));
        if !cmds.is_empty() {
            break cmds;
        }
        let next = tick(&mut core, now + 10, now + 300);
        now += 300;
        c = call(&next);
        assert!(now < 30 + bound + 1_000, "the load is bounded");
    };
    assert!(now >= 30 + bound);
    let c = call(&release);
    assert!(matches!(&c.op, StorageOp::Release { fence, .. } if fence.revision == 4));
    let cmds = core.on_storage_answer(
        now + 10,
        c.call,
        StorageAnswer::Released(Err(StorageProblem::LockLost("taken by primary-2".into()))),
    );
    assert!(matches!(
        events(&cmds)[..],
        [TakeoverEvent::Released {
            already_gone: true,
            revision: 4,
            ..
        }]
    ));
}

/// A restarted primary reclaims once caught up and while the driver's gate is open.
#[test]
fn a_reclaim_waits_for_the_gate_and_catch_up_then_takes_the_identity() {
    let (mut core, id) = standby();
    core.reclaim_when_caught_up(id.clone());
    core.set_reclaim_gate(false);
    let cmds = tick(&mut core, 0, 50);
    assert!(events(&cmds).is_empty(), "gate closed: {cmds:?}");
    core.set_reclaim_gate(true);
    // Slot 0..: an empty chain is caught up with its first slots.
    let cmds = tick(&mut core, 60, 60);
    assert!(
        matches!(
            events(&cmds)[..],
            [TakeoverEvent::Started {
                reason: TakeoverReason::Reclaim,
                caught_up: true,
                ..
            }]
        ),
        "{cmds:?}"
    );
    assert!(!core.reclaim_pending());
    assert_eq!(
        call(&cmds).op,
        StorageOp::LoadTower {
            identity: id.pubkey()
        }
    );
}

/// A node whose ledger cannot record takes no identity: set-identity is refused before
/// anything is asked of storage, and a restarted primary's reclaim waits until it can.
#[test]
fn a_node_that_cannot_record_takes_no_identity_until_it_can() {
    let (mut core, id) = standby();
    core.set_recording(false);
    let err = core.begin_takeover(request(&id)).unwrap_err();
    assert!(matches!(err, CoreError::CannotRecord), "{err:?}");
    assert!(err.to_string().contains("free space"), "{err}");
    core.reclaim_when_caught_up(id.clone());
    let cmds = tick(&mut core, 0, 200);
    assert!(
        events(&cmds).is_empty(),
        "reclaimed while it cannot record: {cmds:?}"
    );
    assert!(core.reclaim_pending());
    core.set_recording(true);
    let cmds = tick(&mut core, 210, 210);
    assert!(
        matches!(
            events(&cmds)[..],
            [TakeoverEvent::Started {
                reason: TakeoverReason::Reclaim,
                ..
            }]
        ),
        "{cmds:?}"
    );
}

/// Runs a whole takeover of `id` (no stored tower) to the switch under `revision`,
/// answering at `at`; returns the switch's store, unconfirmed.
fn take(core: &mut Core, id: &Keypair, at: u64, revision: i64) -> crate::fence::StoreTicket {
    let (_, cmds) = core.begin_takeover(request(id)).unwrap();
    let cmds = core.on_storage_answer(at, call(&cmds).call, StorageAnswer::Tower(Ok(None)));
    let cmds = core.on_storage_answer(at, call(&cmds).call, StorageAnswer::Acquired(Ok(revision)));
    let cmds = core.on_storage_answer(at, call(&cmds).call, StorageAnswer::Tower(Ok(None)));
    assert!(
        matches!(&events(&cmds)[..], [TakeoverEvent::Switched(s)] if s.revision == revision),
        "{cmds:?}"
    );
    cmds.into_iter()
        .find_map(|c| match c {
            Command::StoreTower(t) => Some(t),
            _ => None,
        })
        .expect("a store under the new lock")
}

fn exits(cmds: &[Command]) -> bool {
    cmds.iter().any(|c| matches!(c, Command::Exit(_)))
}

/// A `set-identity` of the identity this node already runs, racing another machine's
/// (seen in CI: three machines at once). The rival's announcement carries a revision above
/// our current lock but below the one our acquire gets: it must not make this node exit
/// while its acquire is out (the lock would be left with an exiting process, and nobody
/// voting), nor must the store under the old lock failing as "lock lost". Judged once
/// the switch is done, the rival is the older one and hears about us.
#[test]
fn a_rival_heard_while_our_own_acquire_is_out_is_judged_against_the_lock_we_end_up_with() {
    let (mut core, id) = standby();
    let old_store = take(&mut core, &id, 10, 7);
    let (_, cmds) = core.begin_takeover(request(&id)).unwrap();
    let cmds = core.on_storage_answer(30, call(&cmds).call, StorageAnswer::Tower(Ok(None)));
    let acquire = call(&cmds);
    assert!(matches!(acquire.op, StorageOp::Acquire { .. }));

    let rival = InstanceAnnouncement::sign(&id, "rival".into(), 30, 25);
    assert!(!exits(&core.on_announcement(40, rival.clone())));
    let report = old_store.failed(crate::StoreFailure::LockLost("taken at revision 30".into()));
    assert!(!exits(&core.on_store_report(45, report)));
    assert!(
        !exits(&tick(&mut core, 50, 80)),
        "judged before the acquire ended"
    );

    let cmds = core.on_storage_answer(90, acquire.call, StorageAnswer::Acquired(Ok(31)));
    let cmds = core.on_storage_answer(95, call(&cmds).call, StorageAnswer::Tower(Ok(None)));
    assert!(matches!(&events(&cmds)[..], [TakeoverEvent::Switched(s)] if s.revision == 31));
    let cmds = tick(&mut core, 100, 100);
    assert!(!exits(&cmds), "{cmds:?}");
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Announce(a) if a.fence_revision == 31)),
        "the rival must hear of the newer lock: {cmds:?}"
    );
    assert!(!exits(&core.on_announcement(110, rival)));
    assert_eq!(core.status().fence.map(|f| f.revision), Some(31));
}

/// The same race where storage refuses our acquire: the rival, kept while it was out, is
/// judged when the takeover ends, and outranks the lock this node still votes under.
#[test]
fn a_rival_heard_during_an_acquire_storage_refused_makes_the_node_exit_after_it() {
    let (mut core, id) = standby();
    let _unconfirmed = take(&mut core, &id, 10, 7);
    let (_, cmds) = core.begin_takeover(request(&id)).unwrap();
    let cmds = core.on_storage_answer(30, call(&cmds).call, StorageAnswer::Tower(Ok(None)));
    let acquire = call(&cmds);
    let rival = InstanceAnnouncement::sign(&id, "rival".into(), 30, 25);
    assert!(!exits(&core.on_announcement(40, rival)));
    let refused = StorageProblem::Refused("etcd: permission denied".into());
    let cmds = core.on_storage_answer(50, acquire.call, StorageAnswer::Acquired(Err(refused)));
    assert!(!exits(&cmds));
    let cmds = tick(&mut core, 60, 60);
    assert!(
        cmds.iter().any(|c| matches!(
            c,
            Command::Exit(ExitReason::DuplicateInstance { other, .. }) if other == "rival"
        )),
        "{cmds:?}"
    );
}
