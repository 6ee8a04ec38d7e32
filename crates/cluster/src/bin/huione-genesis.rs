//! `huione-genesis`: writes the genesis file of a new cluster from `IDENTITY:VOTE:STAKE`
//! validator specs. Each validator's authorized voter is its identity (the failover
//! setup: a secondary started with `--authorized-voter <primary identity>` can take over).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use huione_cluster::genesis::{
    build_genesis, parse_validator_spec, write_genesis, GenesisParams, DEFAULT_SLOTS_PER_EPOCH,
    DEFAULT_SLOT_MS, DEFAULT_START_IN_MS,
};

/// Create the genesis of a new huione cluster.
#[derive(Parser, Debug)]
#[command(name = "huione-genesis", version)]
struct Args {
    /// Where to write the genesis (JSON).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// A staked validator: IDENTITY:VOTE_ACCOUNT:STAKE, each key a base58 pubkey or a
    /// keypair file, the stake in lamports. Repeat for each validator.
    #[arg(
        long = "validator",
        value_name = "IDENTITY:VOTE:STAKE",
        required = true
    )]
    validators: Vec<String>,
    /// Slot length in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_SLOT_MS)]
    slot_ms: u64,
    /// Epoch length in slots (a multiple of 4).
    #[arg(long, value_name = "SLOTS", default_value_t = DEFAULT_SLOTS_PER_EPOCH)]
    slots_per_epoch: u64,
    /// Slot 0 starts this many milliseconds after now.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_START_IN_MS, conflicts_with = "start_time_ms")]
    start_in_ms: u64,
    /// Slot 0 starts at this Unix time in milliseconds (instead of --start-in-ms).
    #[arg(long, value_name = "UNIX_MS")]
    start_time_ms: Option<u64>,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!(
            "huione-genesis: error: {}",
            huione_os::process::error_text(e.as_ref())
        );
        std::process::exit(1);
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let validators = args
        .validators
        .iter()
        .map(|spec| parse_validator_spec(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let now = huione_os::clock::now_ms();
    let params = GenesisParams {
        slot_ms: args.slot_ms,
        slots_per_epoch: args.slots_per_epoch,
        start_time_ms: args
            .start_time_ms
            .unwrap_or_else(|| now.saturating_add(args.start_in_ms)),
    };
    let genesis = build_genesis(validators, &params)?;
    write_genesis(&args.out, &genesis, args.force)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let starts = if genesis.start_time_ms >= now {
        format!("in {} ms", genesis.start_time_ms - now)
    } else {
        format!("{} ms ago", now - genesis.start_time_ms)
    };
    println!(
        "wrote {}: {} validator(s), total stake {}, slot {} ms, {} slots per epoch, slot 0 \
         starts {starts} (unix ms {}), hash {}",
        args.out.display(),
        genesis.validators.len(),
        genesis.total_stake(),
        genesis.slot_duration_ms,
        genesis.slots_per_epoch,
        genesis.start_time_ms,
        genesis.hash
    );
    for v in &genesis.validators {
        println!(
            "  identity {}  vote account {}  stake {}",
            v.identity, v.vote_account, v.stake
        );
    }
    Ok(())
}
