//! `sim-bench`: simulated slots per second for a 10-validator cluster (3 of them with
//! standbys, unless `--validators`/`--standbys` say otherwise) with chaos faults on, and
//! the number of randomized rounds the test suite runs.
//!
//! ```text
//! cargo run -p huione-sim --release --bin sim-bench [-- --slots 2000 --seeds 3]
//! cargo run -p huione-sim --release --bin sim-bench -- --validators 4 --standbys 2
//! ```

use std::time::Instant;

use huione_sim::{Sim, SimConfig, TEST_ROUNDS, TEST_ROUND_SLOTS};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let slots = arg("--slots", 2000);
    let seeds = arg("--seeds", 3);
    let validators = arg("--validators", 10) as usize;
    let standbys = (arg("--standbys", 3) as usize).min(validators);
    let (mut total_slots, mut total_secs, mut faults, mut votes) = (0u64, 0f64, 0u64, 0u64);
    for seed in 0..seeds {
        let mut cfg = SimConfig::random(seed, slots);
        cfg.validators = validators;
        cfg.standbys = standbys;
        let started = Instant::now();
        let result = Sim::new(cfg).run();
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(r) => {
                total_slots += r.slots;
                total_secs += secs;
                faults += r.faults_injected;
                votes += r.votes_audited;
                println!(
                    "seed {seed}: {} slots in {secs:.2} s = {:.0} slots/s ({} faults, {} votes audited, 0 violations)",
                    r.slots,
                    r.slots as f64 / secs,
                    r.faults_injected,
                    r.votes_audited
                );
            }
            Err(f) => {
                eprintln!("{f}");
                std::process::exit(1);
            }
        }
    }
    println!(
        "{validators} validators + {standbys} standbys, faults on: {:.0} simulated slots/s on one core \
         ({total_slots} slots, {faults} faults, {votes} votes audited, 0 violations)",
        total_slots as f64 / total_secs
    );
    println!(
        "test suite: {TEST_ROUNDS} randomized rounds of {TEST_ROUND_SLOTS} fault slots (4 validators, 2 standbys) plus the liveness phase"
    );
}
