//! No half-finished takeover, under the storage faults that cause one: an acquire applied
//! but its answer lost, an acquire applied late, a load failing after the acquire, a
//! store applied but its answer lost. The simulator fails a run (`HalfFinishedTakeover`)
//! when a running process that reaches storage holds a lock without voting under it for
//! longer than the bound, and audits every vote and block as always.

use huione_core::TakeoverEvent;
use huione_sim::{FailureKind, FaultRates, Sim, SimConfig};
use huione_tower_storage::LockEvent;

const STANDBY: usize = 4;

/// Four validators, validator 0 with a standby; quiet network; `faults` are the storage
/// call faults, on for the whole run (the fault phase never ends).
fn cluster(faults: FaultRates) -> Sim {
    let mut cfg = SimConfig::scenario(4, 1);
    cfg.slots = 1_000_000;
    let mut sim = Sim::new(cfg);
    sim.run_slots(40).expect("a healthy cluster runs clean");
    sim.cfg.faults = faults;
    sim
}

fn voters_of_validator_0(sim: &Sim) -> Vec<usize> {
    let identity = sim.genesis.validators[0].identity;
    (0..sim.machines.len())
        .filter(|m| {
            sim.machines[*m]
                .core()
                .is_some_and(|c| c.status().voting && c.identity() == identity)
        })
        .collect()
}

fn history_events(sim: &Sim) -> Vec<(LockEvent, String)> {
    let identity = sim.genesis.validators[0].identity;
    sim.storage
        .history_now(&identity)
        .unwrap()
        .into_iter()
        .map(|r| (r.owner.event, r.owner.instance_id))
        .collect()
}

#[test]
fn an_acquire_whose_answer_is_lost_is_found_in_the_lock_key_and_finished() {
    let mut sim = cluster(FaultRates {
        acquire_answer_lost: 1.0,
        ..FaultRates::none()
    });
    // The acquire applies; its answer is lost: the caller hears of it as a timeout.
    assert!(sim.set_identity(STANDBY).is_ok(), "not answered yet");
    // (Soon enough that the old primary, restarted, has not reclaimed yet.)
    sim.run_slots(4).unwrap_or_else(|f| panic!("{f}"));
    let unanswered = sim.machines[STANDBY].takeover_events.iter().any(|e| {
        matches!(
            e,
            TakeoverEvent::Failed {
                lock: huione_core::LockAfterFailure::Resolving,
                ..
            }
        )
    });
    assert!(unanswered, "{:?}", sim.machines[STANDBY].takeover_events);
    assert_eq!(voters_of_validator_0(&sim), [STANDBY], "{}", sim.describe());
    assert_eq!(sim.machines[STANDBY].stats.takeovers_adopted, 1);
    let standby = sim.machines[STANDBY].instance_id();
    let events = history_events(&sim);
    assert!(
        events.ends_with(&[
            (LockEvent::Acquired, standby.clone()),
            (LockEvent::Finished, standby)
        ]),
        "{events:?}"
    );
    assert_eq!(
        sim.machines[0].stats.exits.len(),
        1,
        "the old primary stopped"
    );
}

#[test]
fn an_acquire_applied_late_is_settled_and_the_switch_finishes() {
    let mut sim = cluster(FaultRates {
        acquire_late: 1.0,
        ..FaultRates::none()
    });
    assert!(sim.set_identity(STANDBY).is_ok(), "not answered yet");
    // Every acquire of the standby is late; the primary keeps the lock until one lands,
    // then the standby finds it in the lock key (or acquires again) and switches.
    sim.run_slots(40).unwrap_or_else(|f| panic!("{f}"));
    sim.cfg.faults = FaultRates::none();
    sim.run_slots(20).unwrap_or_else(|f| panic!("{f}"));
    let voters = voters_of_validator_0(&sim);
    assert_eq!(voters.len(), 1, "exactly one voter: {}", sim.describe());
    let holder = sim
        .storage
        .lock_holder_now(&sim.genesis.validators[0].identity)
        .unwrap()
        .unwrap();
    assert!(holder.is_held());
    assert_eq!(
        holder.owner.instance_id,
        sim.machines[voters[0]].instance_id()
    );
    assert!(sim.auditor.violations().is_empty());
}

#[test]
fn a_load_failing_after_the_acquire_releases_the_lock_within_the_bound() {
    let mut sim = cluster(FaultRates {
        load_after_acquire_fails: 1.0,
        ..FaultRates::none()
    });
    // The primary dies; the standby takes the lock, then cannot load the tower: it must
    // give the lock up by itself (the run fails if it holds it idle).
    sim.crash(0, None);
    let r = sim.set_identity(STANDBY);
    assert!(r.is_ok(), "still loading: {r:?}");
    sim.run_slots(80).unwrap_or_else(|f| panic!("{f}"));
    let released = sim.machines[STANDBY].takeover_events.iter().any(|e| {
        matches!(
            e,
            TakeoverEvent::Released {
                already_gone: false,
                ..
            }
        )
    });
    assert!(released, "{:?}", sim.machines[STANDBY].takeover_events);
    let standby = sim.machines[STANDBY].instance_id();
    assert!(
        history_events(&sim).contains(&(LockEvent::Released, standby)),
        "{:?}",
        history_events(&sim)
    );
    assert!(voters_of_validator_0(&sim).len() <= 1);
    // Storage heals: the watchtower's next failover finishes; the primary comes back and
    // reclaims.
    sim.cfg.faults = FaultRates::none();
    sim.run_slots(30).unwrap_or_else(|f| panic!("{f}"));
    sim.restart(0);
    sim.run_slots(40).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(voters_of_validator_0(&sim).len(), 1, "{}", sim.describe());
    assert!(sim.auditor.violations().is_empty());
}

/// The check itself can fail: a lock record naming a running process that never asked
/// for it (a driver bug) is caught once the bound has passed. (Validator 1 has no standby
/// and its primary is down for good, so neither a watchtower nor a reclaim fixes it.)
#[test]
fn the_half_finished_check_catches_a_lock_nobody_votes_under() {
    let mut sim = cluster(FaultRates::none());
    sim.crash(1, None);
    let identity = sim.genesis.validators[1].identity;
    let owner = huione_tower_storage::LockOwner {
        instance_id: sim.machines[STANDBY].instance_id(),
        ..huione_tower_storage::LockOwner::for_this_process(identity, "a driver bug")
    };
    sim.storage.acquire_now(&identity, owner).unwrap();
    let failure = sim.run_slots(150).unwrap_err();
    assert!(
        matches!(failure.kind, FailureKind::HalfFinishedTakeover(_)),
        "{failure}"
    );
}

/// Chaos with the takeover faults turned up: every run audit-clean, no lock left held
/// idle past the bound, and the faults really produce takeovers finished after a lost
/// answer. (A release needs loads failing for the whole 5 s `takeover_finish_ms`, which
/// per-call faults almost never make; `a_load_failing_after_the_acquire_releases_the_lock_within_the_bound`
/// forces it. The releases this run used to see came from a node exiting on a rival's
/// announcement while its own acquire was out, which no longer happens.)
#[test]
fn chaos_with_lost_and_late_acquires_keeps_every_invariant() {
    let (mut adopted, mut released, mut takeovers) = (0, 0, 0);
    for seed in 0..24 {
        let mut cfg = SimConfig::random(seed, 200);
        cfg.faults.failover = 0.08;
        cfg.faults.acquire_answer_lost = 0.4;
        cfg.faults.acquire_late = 0.3;
        cfg.faults.load_after_acquire_fails = 0.4;
        cfg.faults.store_answer_lost = 0.05;
        let mut sim = Sim::new(cfg);
        let report = sim.run().unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(report.violations, 0);
        for m in &sim.machines {
            adopted += m.stats.takeovers_adopted;
            released += m.stats.takeovers_released;
            takeovers += m.stats.takeovers;
        }
    }
    println!("takeovers {takeovers}, finished after a lost answer {adopted}, released {released}");
    assert!(adopted > 0, "adopted {adopted}, released {released}");
}
