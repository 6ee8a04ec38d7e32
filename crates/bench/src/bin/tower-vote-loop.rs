//! A minimal voter used by the failover demo (`scripts/demo.sh`) until the full
//! validator exists: it acquires the tower lock for an identity, loads and verifies the
//! stored tower, and then every slot records a vote, stores the tower, and only after the
//! store succeeded "sends" the vote (appends it to `--votes-log`). A lost lock ends it
//! with exit code 3; a transient storage error withholds that slot's vote.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use huione_cli::StorageArgs;
use huione_keys::Keypair;
use huione_tower::{SavedTower, Tower};
use huione_tower_storage::{LockOwner, StorageError, TowerStorage};

const EXIT_LOCK_LOST: u8 = 3;

#[derive(Parser)]
struct Args {
    /// Keypair of the identity to vote as.
    #[arg(long)]
    identity: PathBuf,
    /// A name for this machine in the output (primary, secondary).
    #[arg(long)]
    name: String,
    #[command(flatten)]
    storage: StorageArgs,
    /// Slot length.
    #[arg(long, default_value_t = 400)]
    slot_ms: u64,
    /// Stop after this many votes.
    #[arg(long, default_value_t = 1000)]
    max_votes: u64,
    /// Append sent votes here as `slot name instance`.
    #[arg(long)]
    votes_log: PathBuf,
}

fn main() -> ExitCode {
    huione_cli::init_logging();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let kp = Keypair::read_file(&args.identity)?;
    let id = kp.pubkey();
    let storage = args.storage.open(None).await?;
    let lease = storage
        .acquire(
            &id,
            LockOwner::for_this_process(id, &format!("demo-{}", args.name)),
        )
        .await?;
    println!(
        "[{}] acquired the tower lock for {id} at revision {}",
        args.name,
        lease.revision()
    );
    let mut tower = storage
        .load_verified(&id)
        .await?
        .unwrap_or_else(|| Tower::new(id));
    println!(
        "[{}] loaded tower: last vote {:?}, root {:?}",
        args.name,
        tower.last_voted_slot(),
        tower.root()
    );
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.votes_log)?;
    for _ in 0..args.max_votes {
        let now_ms = now_ms();
        let slot = now_ms / args.slot_ms;
        tokio::time::sleep(Duration::from_millis(args.slot_ms - now_ms % args.slot_ms)).await;
        let mut next = tower.clone();
        if next.last_voted_slot().is_some_and(|l| slot <= l) {
            continue;
        }
        next.record_vote(slot, [0; 32], now_ms);
        match storage.store(&lease, &SavedTower::new(&next, &kp)?).await {
            Ok(rev) => {
                tower = next;
                writeln!(log, "{slot} {} {}", args.name, lease.owner().instance_id)?;
                println!(
                    "[{}] slot {slot}: tower stored (revision {rev}), vote sent",
                    args.name
                );
            }
            Err(StorageError::LockLost(lost)) => {
                println!("[{}] slot {slot}: NOT voting: {lost}", args.name);
                println!(
                    "[{}] exiting: another instance holds the identity",
                    args.name
                );
                return Ok(ExitCode::from(EXIT_LOCK_LOST));
            }
            Err(e) => println!("[{}] slot {slot}: vote withheld: {e}", args.name),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
