//! The shipped watchtower decision state machine (`huione_watchtower::decision::Monitor`)
//! meets simulated faults: its hysteresis, arming and cooldown rules are what act, not a
//! model of them. Four validators; validator 0 has a standby (machine 4) and a watchtower
//! that checks every 200 ms with the shipped default thresholds unless a test says
//! otherwise. Every run is audited after every vote and block.

use huione_sim::{Sim, SimConfig, CHECK_INTERVAL_MS, RPC_TIMEOUT_MS};

const PRIMARY: usize = 0;
const STANDBY: usize = 4;

fn new_cluster(cfg: SimConfig) -> Sim {
    let mut sim = Sim::new(cfg);
    sim.run_slots(40).unwrap_or_else(|f| panic!("{f}"));
    assert!(voting_as_validator(&sim, PRIMARY), "{}", sim.describe());
    assert!(
        sim.watchtowers[0].monitor().armed(),
        "{:?}",
        sim.watchtowers[0].decisions
    );
    sim
}

fn cluster() -> Sim {
    new_cluster(SimConfig::scenario(4, 1))
}

fn voting_as_validator(sim: &Sim, m: usize) -> bool {
    let identity = sim.genesis.validators[0].identity;
    sim.machines[m]
        .core()
        .is_some_and(|c| c.status().voting && c.identity() == identity)
}

fn standby_votes(sim: &Sim) -> usize {
    sim.vote_log.iter().filter(|v| v.machine == STANDBY).count()
}

/// Fails over after `unhealthy_checks` (3) consecutive failing checks and not before: a
/// primary frozen for 400 ms fails the checks whose 250 ms timeout ends before it resumes
/// (checks start every 100 ms; a later one is answered when the process resumes, late
/// but healthy), fewer than three in a row, and one healthy check resets the count, so
/// five such freezes never trigger; an 800 ms freeze does, within a second. (The simulator's old model waited for 12
/// slots of a non-running lock holder: it would not have acted on the 800 ms freeze.)
#[test]
fn short_freezes_are_not_failed_over_and_three_failing_checks_are() {
    let mut sim = cluster();
    for _ in 0..5 {
        sim.freeze(PRIMARY, 4);
        sim.run_slots(12).unwrap_or_else(|f| panic!("{f}"));
    }
    let w = &sim.watchtowers[0];
    assert!(w.failovers.is_empty(), "{:?}", w.failovers);
    assert!(
        w.count("suspect") >= 5,
        "saw the freezes: {:?}",
        w.decisions
    );
    assert!(w.monitor().armed());
    assert_eq!(standby_votes(&sim), 0);
    assert!(voting_as_validator(&sim, PRIMARY));

    let frozen_ms = sim.now_ms;
    sim.freeze(PRIMARY, 8);
    sim.run_slots(12).unwrap_or_else(|f| panic!("{f}"));
    let w = &sim.watchtowers[0];
    assert_eq!(w.failovers.len(), 1, "{:?}", w.decisions);
    let f = &w.failovers[0];
    assert_eq!(f.order.reason(), "primary_rpc_timeout");
    assert_eq!(f.order.failing_checks, 3);
    assert_eq!(f.result, Some(Ok(())));
    let after_ms = f.decided_ms - frozen_ms;
    println!("800 ms freeze: failover decided {after_ms} ms after it began");
    // Three timed-out checks, overlapping: the first starts within one interval, its
    // timeout ends 250 ms later, the third's two intervals after that.
    assert!(
        after_ms <= 3 * CHECK_INTERVAL_MS + RPC_TIMEOUT_MS,
        "{after_ms} ms"
    );
    assert!(voting_as_validator(&sim, STANDBY), "{}", sim.describe());
}

/// A watchtower that has never seen the primary healthy does not act: here the primary
/// dies before the first check, and its standby is left alone for 6 s. (The old model
/// failed over any pair whose lock nobody voted under.) Once the primary has run
/// healthy, the same watchtower fails the next crash over.
#[test]
fn a_watchtower_that_never_saw_the_primary_healthy_does_not_act() {
    let mut sim = Sim::new(SimConfig::scenario(4, 1));
    sim.crash(PRIMARY, None);
    sim.run_slots(60).unwrap_or_else(|f| panic!("{f}"));
    let w = &sim.watchtowers[0];
    let checks: u64 = w.decisions.values().sum();
    assert!(checks >= 20, "{:?}", w.decisions);
    assert_eq!(w.count("hold_not_armed"), checks, "{:?}", w.decisions);
    assert!(!w.monitor().armed());
    assert!(w.failovers.is_empty());
    assert!(!voting_as_validator(&sim, STANDBY));
    assert_eq!(standby_votes(&sim), 0);

    sim.restart(PRIMARY);
    sim.run_slots(40).unwrap_or_else(|f| panic!("{f}"));
    assert!(voting_as_validator(&sim, PRIMARY), "{}", sim.describe());
    assert!(sim.watchtowers[0].monitor().armed());
    sim.crash(PRIMARY, None);
    sim.run_slots(15).unwrap_or_else(|f| panic!("{f}"));
    let w = &sim.watchtowers[0];
    assert_eq!(w.failovers.len(), 1, "{:?}", w.decisions);
    assert_eq!(w.failovers[0].order.reason(), "primary_rpc_unreachable");
    assert!(voting_as_validator(&sim, STANDBY), "{}", sim.describe());
}

/// Runs slot by slot until `done` holds, at most `max_slots`; false if it never did.
fn run_until(sim: &mut Sim, max_slots: u64, done: impl Fn(&Sim) -> bool) -> bool {
    for _ in 0..max_slots {
        if done(sim) {
            return true;
        }
        sim.run_slots(1).unwrap_or_else(|f| panic!("{f}"));
    }
    done(sim)
}

/// A flapping primary gets one failover per incident: after the first, the incident stays
/// open for the cooldown (here 20 s) although the primary reclaims its identity and
/// freezes again, twice, 2 s each time. Once the cooldown has passed and the primary has
/// been healthy for `rearm_checks` checks, the next freeze is a new incident and is failed
/// over again. (The old model acted on every freeze longer than its 12-slot grace.)
#[test]
fn a_flapping_primary_gets_one_failover_per_incident() {
    const COOLDOWN_MS: u64 = 20_000;
    let mut cfg = SimConfig::scenario(4, 1);
    cfg.watchtower.cooldown_ms = COOLDOWN_MS;
    let mut sim = new_cluster(cfg);
    for round in 0..3 {
        // The primary (restarted after the first round's takeover) holds the identity.
        let reclaimed = run_until(&mut sim, 100, |s| voting_as_validator(s, PRIMARY));
        assert!(reclaimed, "round {round}: {}", sim.describe());
        sim.freeze(PRIMARY, 20);
        sim.run_slots(25).unwrap_or_else(|f| panic!("{f}"));
    }
    let first_ms = {
        let w = &sim.watchtowers[0];
        assert_eq!(w.failovers.len(), 1, "{:?} {:?}", w.failovers, w.decisions);
        assert!(w.count("hold_incident_open") >= 6, "{:?}", w.decisions);
        w.failovers[0].finished_ms.expect("finished")
    };
    assert!(
        sim.now_ms < first_ms + COOLDOWN_MS,
        "the rounds fit in the cooldown"
    );
    // Healthy past the cooldown: the incident ends, and a new one is failed over.
    let rearmed = run_until(&mut sim, 300, |s| s.watchtowers[0].monitor().armed());
    assert!(rearmed, "{:?}", sim.watchtowers[0].decisions);
    assert!(sim.now_ms >= first_ms + COOLDOWN_MS);
    assert!(voting_as_validator(&sim, PRIMARY), "{}", sim.describe());
    sim.freeze(PRIMARY, 20);
    sim.run_slots(25).unwrap_or_else(|f| panic!("{f}"));
    let w = &sim.watchtowers[0];
    assert_eq!(w.failovers.len(), 2, "{:?}", w.decisions);
    assert!(w.failovers[1].decided_ms >= first_ms + COOLDOWN_MS);
    assert_eq!(w.failovers[1].result, Some(Ok(())));
    assert!(sim.auditor.violations().is_empty());
}

/// The watchtower decides from the simulated world only: the same seed gives the same
/// decisions and failovers. Over a few chaos rounds it does fail over.
#[test]
fn watchtower_decisions_are_deterministic_per_seed() {
    let mut failovers = 0;
    for seed in 0..4 {
        let run = || {
            let mut sim = Sim::new(SimConfig::random(seed, 60));
            let report = sim.run().unwrap_or_else(|f| panic!("{f}"));
            (report, sim.watchtowers)
        };
        let (report_a, towers_a) = run();
        let (report_b, towers_b) = run();
        assert_eq!(report_a, report_b);
        for (a, b) in towers_a.iter().zip(&towers_b) {
            assert_eq!(a.decisions, b.decisions);
            assert_eq!(a.failovers, b.failovers);
        }
        failovers += report_a.watchtower_failovers;
    }
    assert!(failovers > 0, "no watchtower failover in 4 chaos rounds");
}

/// A restarted standby pulls the gossip table as it joins, so the watchtower does not read
/// its first, empty table as "the primary is absent from gossip" and fail a healthy primary
/// over (restarts at every phase of the 500 ms gossip push).
#[test]
fn a_restarted_standby_does_not_see_a_healthy_primary_absent_from_gossip() {
    let mut sim = cluster();
    for after_slots in 3..9 {
        sim.crash(STANDBY, Some(after_slots));
        sim.run_slots(after_slots + 10)
            .unwrap_or_else(|f| panic!("{f}"));
        assert!(sim.machines[STANDBY].core().is_some(), "restarted");
    }
    let w = &sim.watchtowers[0];
    assert!(w.failovers.is_empty(), "{:?}", w.failovers);
    assert_eq!(w.count("suspect"), 0, "{:?}", w.decisions);
    assert!(w.count("healthy") >= 40, "{:?}", w.decisions);
}
