//! Hand-written failover scenarios on the simulator. Four validators; validator 0 has a
//! standby (machine 4). No random faults, no message loss. Every run is also audited
//! after every vote and block (a violation fails the `run_slots` call).

use huione_core::ExitReason;
use huione_sim::{MachineState, Sim, SimConfig};

const PRIMARY: usize = 0;
const STANDBY: usize = 4;

fn cluster() -> Sim {
    let mut sim = Sim::new(SimConfig::scenario(4, 1));
    sim.run_slots(60).expect("a healthy cluster runs clean");
    assert!(sim.max_root() > 0, "roots advance in a healthy cluster");
    sim
}

fn voting_as_validator(sim: &Sim, m: usize) -> bool {
    let identity = sim.genesis.validators[0].identity;
    sim.machines[m]
        .core()
        .is_some_and(|c| c.status().voting && c.identity() == identity)
}

fn votes_by(sim: &Sim, m: usize, from_ms: u64) -> Vec<u64> {
    sim.vote_log
        .iter()
        .filter(|v| v.machine == m && v.sent_ms >= from_ms)
        .map(|v| v.slot)
        .collect()
}

/// Slots in `from..to` for which validator 0's account sent no vote.
fn unvoted_slots(sim: &Sim, from: u64, to: u64) -> usize {
    let account = huione_sim::vote_account(0);
    (from..to)
        .filter(|s| {
            !sim.vote_log
                .iter()
                .any(|v| v.vote_account == account && v.slot == *s)
        })
        .count()
}

fn exits(sim: &Sim, m: usize) -> &[(u64, ExitReason)] {
    &sim.machines[m].stats.exits
}

#[test]
fn planned_set_identity_handover() {
    let mut sim = cluster();
    assert!(voting_as_validator(&sim, PRIMARY));
    let handover_ms = sim.now_ms;
    let handover_slot = sim.slot();
    sim.set_identity(STANDBY)
        .expect("set-identity on the standby");
    sim.run_slots(4).unwrap();
    assert!(voting_as_validator(&sim, STANDBY), "{}", sim.describe());
    assert!(
        !votes_by(&sim, STANDBY, handover_ms).is_empty(),
        "the standby votes"
    );
    // The old primary stopped at once: fenced store or the newer instance's announcement.
    assert_eq!(exits(&sim, PRIMARY).len(), 1, "{:?}", exits(&sim, PRIMARY));
    let missed = unvoted_slots(&sim, handover_slot - 5, handover_slot + 5);
    let baseline = unvoted_slots(&sim, handover_slot - 15, handover_slot - 5);
    println!("planned handover: {missed} unvoted slots around it ({baseline} in 10 slots before)");
    assert!(
        missed <= baseline + 2,
        "handover lost {missed} vote slots (baseline {baseline})"
    );
    // The restarted primary reclaims once caught up; the standby then exits.
    sim.run_slots(30).unwrap();
    assert!(
        voting_as_validator(&sim, PRIMARY),
        "the restarted primary reclaims"
    );
    assert_eq!(exits(&sim, STANDBY).len(), 1);
}

#[test]
fn primary_crash_and_standby_takeover() {
    let mut sim = cluster();
    let crash_ms = sim.now_ms;
    sim.crash(PRIMARY, None);
    sim.run_slots(18).unwrap();
    assert!(
        voting_as_validator(&sim, STANDBY),
        "the watchtower failed over"
    );
    let first = sim
        .vote_log
        .iter()
        .find(|v| v.machine == STANDBY && v.sent_ms >= crash_ms)
        .expect("the standby voted");
    let ms = first.sent_ms - crash_ms;
    println!("unplanned failover: first standby vote {ms} ms after the crash");
    // The watchtower's three failing checks (200 ms apart) plus a slot or two to vote.
    assert!(ms <= 3 * 200 + 500, "took {ms} ms");
    let w = &sim.watchtowers[0];
    assert_eq!(w.failovers.len(), 1, "{:?}", w.decisions);
    assert_eq!(w.failovers[0].order.reason(), "primary_rpc_unreachable");
    sim.restart(PRIMARY);
    sim.run_slots(30).unwrap();
    assert!(
        voting_as_validator(&sim, PRIMARY),
        "the restarted primary reclaims"
    );
    assert!(
        !exits(&sim, STANDBY).is_empty(),
        "the standby gave the identity back"
    );
    assert!(sim.max_root() > 60);
}

#[test]
fn frozen_primary_resumes_after_takeover_and_never_votes_again() {
    let mut sim = cluster();
    sim.freeze(PRIMARY, 30);
    let sent_before = sim.machines[PRIMARY].stats.votes_sent;
    sim.run_slots(25).unwrap();
    assert!(
        voting_as_validator(&sim, STANDBY),
        "the watchtower failed over"
    );
    let w = &sim.watchtowers[0];
    assert_eq!(w.failovers.len(), 1, "{:?}", w.decisions);
    assert_eq!(w.failovers[0].order.reason(), "primary_rpc_timeout");
    let resume_ms = sim.now_ms + 5 * 100;
    sim.run_slots(7).unwrap();
    assert!(
        matches!(sim.machines[PRIMARY].state, MachineState::Down { .. }),
        "it exited"
    );
    let reasons = exits(&sim, PRIMARY);
    assert_eq!(reasons.len(), 1);
    assert!(
        matches!(
            reasons[0].1,
            ExitReason::LockLost(_) | ExitReason::DuplicateInstance { .. }
        ),
        "{reasons:?}"
    );
    // Nothing decided after the resume left the process.
    let late: Vec<_> = sim
        .vote_log
        .iter()
        .filter(|v| v.machine == PRIMARY && v.decided_ms >= resume_ms)
        .collect();
    assert!(late.is_empty(), "stale primary voted: {late:?}");
    assert!(sim.machines[PRIMARY].stats.votes_sent <= sent_before + 1);
}

/// A primary cut off from tower storage withholds its votes (no vote without a store), and
/// once its stores have failed for two slots its `getHealth` says it is unhealthy: the
/// watchtower fails over after three such checks. The cut-off primary exits on the
/// standby's announcement (or its next store once storage is back).
#[test]
fn primary_cut_off_from_storage_withholds_votes_and_is_failed_over() {
    let mut sim = cluster();
    sim.cut_storage(PRIMARY, true);
    sim.run_slots(2).unwrap();
    let cut_ms = sim.now_ms;
    sim.run_slots(2).unwrap();
    assert!(
        votes_by(&sim, PRIMARY, cut_ms).is_empty(),
        "no vote without a store"
    );
    assert_eq!(
        sim.machines[PRIMARY].state,
        MachineState::Running,
        "a transient failure is not fatal"
    );
    assert!(sim.machines[PRIMARY].stats.stores_unavailable > 0);
    assert!(sim.watchtowers[0].failovers.is_empty(), "not yet");
    sim.run_slots(10).unwrap();
    let w = &sim.watchtowers[0];
    assert_eq!(w.failovers.len(), 1, "{:?}", w.decisions);
    assert_eq!(w.failovers[0].order.reason(), "primary_behind");
    assert_eq!(w.failovers[0].result, Some(Ok(())));
    assert!(voting_as_validator(&sim, STANDBY), "{}", sim.describe());
    sim.cut_storage(PRIMARY, false);
    sim.run_slots(5).unwrap();
    let (exit_ms, reason) = exits(&sim, PRIMARY)
        .first()
        .cloned()
        .expect("the cut-off primary exits");
    assert!(
        matches!(
            reason,
            ExitReason::LockLost(_) | ExitReason::DuplicateInstance { .. }
        ),
        "{reason:?}"
    );
    // Its process sent nothing since the cut (a restarted one may reclaim later: the
    // restart cycle).
    let sent_by_cut_process = sim
        .vote_log
        .iter()
        .filter(|v| v.machine == PRIMARY && (cut_ms..=exit_ms).contains(&v.sent_ms))
        .count();
    assert_eq!(sent_by_cut_process, 0, "no vote without a store");
    assert!(!votes_by(&sim, STANDBY, cut_ms).is_empty());
}

#[test]
fn both_machines_take_the_identity_at_once() {
    let mut sim = cluster();
    let t = sim.now_ms;
    sim.set_identity(PRIMARY).unwrap();
    sim.set_identity(STANDBY).unwrap();
    sim.run_slots(3).unwrap();
    // The later acquire (the standby) holds the lock; the primary is fenced off.
    assert!(voting_as_validator(&sim, STANDBY));
    assert_eq!(exits(&sim, PRIMARY).len(), 1);
    assert!(exits(&sim, STANDBY).is_empty());
    assert!(!votes_by(&sim, STANDBY, t).is_empty());
    sim.run_slots(30).unwrap();
    assert!(sim.auditor.violations().is_empty());
}

#[test]
fn a_tampered_tower_is_refused_and_nothing_changes() {
    let mut sim = cluster();
    let identity = sim.machines[PRIMARY].core().unwrap().identity();
    let key = sim.storage.tower_key(&identity);
    sim.storage.with_kv(|kv| {
        let mut bytes = kv.get(&key).unwrap().value.clone();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        kv.put(&key, bytes);
    });
    let err = sim.set_identity(STANDBY).unwrap_err();
    assert!(err.contains("signature"), "{err}");
    assert!(!sim.machines[STANDBY].core().unwrap().status().voting);
}

/// Agave's vote threshold and supermajority root need strictly more than 2/3 of stake
/// (`fork_stake / total_stake > 2/3`). With three equal stakes and one validator down,
/// the other two hold exactly 2/3: they stop at the depth-8 threshold and roots stop
/// advancing. When the third comes back, roots advance again.
#[test]
fn two_of_three_equal_stakes_stop_at_the_threshold() {
    let mut cfg = SimConfig::scenario(3, 0);
    cfg.stakes = Some(vec![100, 100, 100]);
    let mut sim = Sim::new(cfg);
    sim.run_slots(60).expect("a healthy cluster runs clean");
    let before = sim.max_root();
    assert!(before > 0, "roots advance with all three voting");
    sim.crash(2, None);
    sim.run_slots(200).unwrap();
    let stalled = sim.max_root();
    println!("root {before} at the crash, {stalled} 200 slots later");
    assert!(
        stalled < before + 32,
        "two of three equal stakes rooted from {before} to {stalled}"
    );
    let threshold_failed: u64 = (0..2)
        .filter_map(|m| sim.machines[m].core())
        .map(|c| c.stats().threshold_failed)
        .sum();
    assert!(threshold_failed > 0, "the survivors hit the threshold");
    sim.restart(2);
    sim.run_slots(300).unwrap();
    assert!(
        sim.max_root() > stalled + 32,
        "roots advance again once all three vote ({} after {stalled})",
        sim.max_root()
    );
}
