//! The simulator catches real mistakes: with a bug planted in the core, a seed finds a
//! violation (and prints the line that replays it).

use huione_core::audit::Violation;
use huione_core::PlantedBug;
use huione_sim::{FailureKind, Sim, SimConfig, SimFailure};

/// The first failing seed among `seeds`, for chaos rounds with `bug` planted.
fn first_failure(
    bug: PlantedBug,
    check_store: bool,
    seeds: std::ops::Range<u64>,
) -> Option<SimFailure> {
    seeds.into_iter().find_map(|seed| {
        let mut cfg = SimConfig::random(seed, 150);
        cfg.planted_bug = Some(bug);
        cfg.check_store_before_send = check_store;
        Sim::new(cfg).run().err()
    })
}

#[test]
fn vote_sent_before_store_is_caught_by_the_driver_check() {
    let f = first_failure(PlantedBug::SendBeforeStore, true, 0..5).expect("a seed finds it");
    println!("{f}");
    assert!(matches!(f.kind, FailureKind::VoteBeforeStore(_)), "{f}");
    assert!(f.to_string().contains(&format!("--seed {}", f.seed)));
    assert!(f.to_string().contains("--planted-bug send-before-store"));
}

#[test]
fn vote_sent_before_store_is_caught_by_the_auditor_alone() {
    // The primary loses storage and sends a vote it could not store; the standby takes
    // over at once with the older stored tower and votes that slot again.
    let mut cfg = SimConfig::scenario(4, 1);
    cfg.planted_bug = Some(PlantedBug::SendBeforeStore);
    cfg.check_store_before_send = false;
    let mut sim = Sim::new(cfg);
    sim.run_slots(60).unwrap();
    sim.cut_storage(0, true);
    sim.run_slots(1).unwrap();
    sim.set_identity(4).unwrap();
    let err = sim
        .run_slots(10)
        .expect_err("the auditor reports the double vote");
    println!("{err}");
    let FailureKind::Violation(v) = &err.kind else {
        panic!("{err}")
    };
    assert!(
        matches!(
            **v,
            Violation::DoubleVote { .. } | Violation::LockoutViolation { .. }
        ),
        "{err}"
    );
}

#[test]
fn standby_ignoring_the_stored_tower_is_caught() {
    let f = first_failure(PlantedBug::IgnoreStoredTower, true, 0..20).expect("a seed finds it");
    println!("{f}");
    assert!(matches!(f.kind, FailureKind::Violation(_)), "{f}");
}

#[test]
fn the_same_seeds_pass_without_the_bug() {
    for seed in 0..3 {
        huione_sim::run_seed(seed, 150).unwrap_or_else(|f| panic!("{f}"));
    }
}

/// The planted bugs are compiled only where asked: huione-sim's tests turn on
/// huione-core's `planted-bugs` feature (a dev-dependency feature); nothing the validator
/// binary is built from does.
#[test]
fn planted_bugs_are_not_in_the_validator_build() {
    let tree = |package: &str, edges: &str| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = std::process::Command::new(cargo)
            .args(["tree", "--offline", "-p", package, "-e", edges])
            .args(["-i", "huione-core"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo tree");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let validator = tree("huione-validator", "normal,build,features");
    assert!(validator.contains("huione-validator v"), "{validator}");
    assert!(!validator.contains("planted-bugs"), "{validator}");
    let sim = tree("huione-sim", "normal,build,dev,features");
    assert!(
        sim.contains("huione-core feature \"planted-bugs\""),
        "{sim}"
    );
}
