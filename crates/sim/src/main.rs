//! `huione-sim`: run seeded simulation rounds from the command line.
//!
//! ```text
//! huione-sim --seed 1234 --slots 2000            # one round, replays a failure
//! huione-sim --seeds 100 --slots 300             # rounds with seeds 0..100
//! huione-sim --seed 7 --planted-bug send-before-store   # built with --features planted-bugs
//! ```

use std::process::ExitCode;

use huione_sim::{parse_bug, FaultRates, Sim, SimConfig};

struct Args {
    seed: u64,
    seeds: Option<u64>,
    cfg: SimConfig,
}

fn usage() -> &'static str {
    "usage: huione-sim [--seed N | --seeds COUNT] [--slots N] [--liveness-slots N] \
     [--validators N] [--standbys N] [--no-faults] [--planted-bug send-before-store|ignore-stored-tower|floor-from-clock]"
}

fn parse() -> Result<Args, String> {
    let mut cfg = SimConfig::random(0, 300);
    let mut seeds = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--seed" => cfg.seed = num(value()?)?,
            "--seeds" => seeds = Some(num(value()?)?),
            "--slots" => cfg.slots = num(value()?)?,
            "--liveness-slots" => cfg.liveness_slots = num(value()?)?,
            "--validators" => cfg.validators = num(value()?)? as usize,
            "--standbys" => cfg.standbys = num(value()?)? as usize,
            "--no-faults" => cfg.faults = FaultRates::none(),
            "--planted-bug" => {
                let v = value()?;
                if !huione_core::PLANTED_BUGS_BUILT {
                    return Err(format!(
                        "--planted-bug {v}: {}",
                        huione_core::PlantedBugsNotBuilt
                    ));
                }
                cfg.planted_bug = Some(parse_bug(&v).ok_or(format!("unknown bug {v:?}"))?);
            }
            "-h" | "--help" => return Err(usage().into()),
            other => return Err(format!("unknown flag {other}\n{}", usage())),
        }
    }
    if cfg.validators == 0 || cfg.standbys > cfg.validators {
        return Err("need --validators >= 1 and --standbys <= --validators".into());
    }
    Ok(Args {
        seed: cfg.seed,
        seeds,
        cfg,
    })
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let seeds: Vec<u64> = match args.seeds {
        Some(n) => (0..n).collect(),
        None => vec![args.seed],
    };
    for seed in seeds {
        let cfg = SimConfig {
            seed,
            ..args.cfg.clone()
        };
        let started = std::time::Instant::now();
        let mut sim = Sim::new(cfg);
        match sim.run() {
            Ok(r) => println!(
                "seed={seed} ok: {} slots, root {} -> {} ({} slots to recover), {} votes and {} blocks audited, {} faults, {} watchtower failovers, 0 violations ({:.2?})",
                r.slots,
                r.root_at_heal,
                r.final_root,
                r.recovery_slots,
                r.votes_audited,
                r.blocks_audited,
                r.faults_injected,
                r.watchtower_failovers,
                started.elapsed()
            ),
            Err(f) => {
                eprintln!("{f}");
                if std::env::var_os("HUIONE_SIM_VERBOSE").is_some() {
                    eprintln!("{}", sim.describe());
                }
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
