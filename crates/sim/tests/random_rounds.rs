//! Randomized rounds: `TEST_ROUNDS` seeds of chaos (crashes, freezes, failovers, dual
//! takeovers, partitions, storage outages and cuts, message loss), each audited after
//! every vote and block, then healed and required to root again. Split in four tests so
//! they run in parallel.

use huione_sim::{run_seed, TEST_ROUNDS, TEST_ROUND_SLOTS};

fn rounds(part: u64) {
    let per = TEST_ROUNDS / 4;
    let mut faults = 0;
    for seed in part * per..(part + 1) * per {
        match run_seed(seed, TEST_ROUND_SLOTS) {
            Ok(r) => {
                assert_eq!(r.violations, 0);
                assert!(r.final_root > r.root_at_heal, "seed {seed}: {r:?}");
                faults += r.faults_injected;
            }
            Err(f) => panic!("{f}"),
        }
    }
    assert!(faults > per, "faults were injected ({faults})");
}

#[test]
fn random_rounds_part_0() {
    rounds(0);
}
#[test]
fn random_rounds_part_1() {
    rounds(1);
}
#[test]
fn random_rounds_part_2() {
    rounds(2);
}
#[test]
fn random_rounds_part_3() {
    rounds(3);
}

#[test]
fn a_seed_replays_exactly() {
    let a = run_seed(42, 60).unwrap();
    let b = run_seed(42, 60).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, run_seed(43, 60).unwrap());
}
