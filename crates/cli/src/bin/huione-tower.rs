//! `huione-tower`: inspect stored towers and their lock history.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use huione_cli::{parse_identity, StorageArgs};
use huione_tower::Tower;
use huione_tower_storage::{AnyTowerStorage, EtcdStatus, LockRecord, TowerStorage};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "huione-tower",
    version,
    about = "Inspect stored towers and tower locks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Show the stored tower of an identity and who holds its lock.
    Show {
        /// The identity: base58 pubkey or keypair file.
        #[arg(long)]
        identity: String,
        #[command(flatten)]
        storage: StorageArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// List every acquire of an identity's tower lock (the audit records).
    History {
        #[arg(long)]
        identity: String,
        #[command(flatten)]
        storage: StorageArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

fn main() -> ExitCode {
    huione_os::process::restore_default_sigpipe();
    huione_cli::init_logging_quiet();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", huione_os::process::error_text(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Show {
            identity,
            storage,
            output,
        } => {
            let id = parse_identity(&identity)?;
            let store = storage.open(None).await?;
            let holder = store.lock_holder(&id).await?;
            let tower = store.load_verified(&id).await.with_context(|| {
                format!("cannot load the tower of {id} from {}", store.describe())
            })?;
            let etcd = match &store {
                AnyTowerStorage::Etcd(e) => Some(e.server_status().await.with_context(|| {
                    format!("cannot read etcd's status from {}", store.describe())
                })?),
                _ => None,
            };
            match output {
                Output::Json => {
                    let mut v = show_json(
                        &id.to_string(),
                        &store.describe(),
                        tower.as_ref(),
                        holder.as_ref(),
                    );
                    v["etcd"] = serde_json::to_value(&etcd)?;
                    println!("{}", serde_json::to_string_pretty(&v)?)
                }
                Output::Text => {
                    print_show(
                        &id.to_string(),
                        &store.describe(),
                        tower.as_ref(),
                        holder.as_ref(),
                    );
                    if let Some(st) = &etcd {
                        print_etcd(st);
                    }
                }
            }
            if tower.is_none() {
                anyhow::bail!("no tower is stored for {id} in {}", store.describe());
            }
        }
        Command::History {
            identity,
            storage,
            output,
        } => {
            let id = parse_identity(&identity)?;
            let store = storage.open(None).await?;
            let history = store.history(&id).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&history)?),
                Output::Text => {
                    println!("lock history of {id} in {}:", store.describe());
                    if history.is_empty() {
                        println!("  (never acquired)");
                    }
                    for r in &history {
                        println!("  {}", describe_record(r));
                    }
                }
            }
        }
    }
    Ok(())
}

/// etcd's database size, quota and alarms (the tower's history lives there too).
fn print_etcd(st: &EtcdStatus) {
    let mib = |b: i64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
    println!(
        "etcd:       {} (version {}), revision {}, compacted to {}",
        st.endpoint,
        st.version,
        st.revision,
        st.compacted_revision
            .map_or("- (not by this client)".to_string(), |r| r.to_string())
    );
    println!(
        "etcd db:    {} ({} in use), quota {}",
        mib(st.db_size_bytes),
        mib(st.db_size_in_use_bytes),
        st.quota_bytes.map_or(
            "not reported (see etcd's --quota-backend-bytes)".to_string(),
            mib
        )
    );
    match st.alarm_summary() {
        Some(a) => println!("etcd alarm: {a}"),
        None => println!("etcd alarm: none"),
    }
}

fn describe_record(r: &LockRecord) -> String {
    let of = r
        .owner
        .lease_revision
        .map(|l| format!(" (of the acquire at revision {l})"))
        .unwrap_or_default();
    format!(
        "revision {:>8}  {:<8}{of}  at {} ms  instance {} on {} (pid {})  reason {}",
        r.revision,
        r.owner.event.as_str(),
        r.owner.acquired_at_ms,
        r.owner.instance_id,
        r.owner.host,
        r.owner.pid,
        r.owner.reason
    )
}

fn show_json(
    id: &str,
    storage: &str,
    tower: Option<&Tower>,
    holder: Option<&LockRecord>,
) -> serde_json::Value {
    json!({
        "identity": id,
        "storage": storage,
        "tower": tower.map(|t| json!({
            "root": t.root(),
            "lastVote": t.last_voted_slot(),
            "lastVoteTimestampMs": t.last_vote_timestamp_ms(),
            "leaderClaim": t.leader_claim(),
            "votes": t.votes().map(|l| json!({
                "slot": l.slot,
                "confirmationCount": l.confirmation_count,
                "lockout": l.lockout(),
                "lockedOutUntil": l.last_locked_out_slot(),
            })).collect::<Vec<_>>(),
        })),
        "lock": holder,
    })
}

fn print_show(id: &str, storage: &str, tower: Option<&Tower>, holder: Option<&LockRecord>) {
    println!("identity:   {id}");
    println!("storage:    {storage}");
    match holder {
        Some(r) => println!("lock:       {}", describe_record(r)),
        None => println!("lock:       not held"),
    }
    let Some(t) = tower else {
        println!("tower:      none stored");
        return;
    };
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    println!("root:       {}", opt(t.root()));
    println!(
        "last vote:  {} (at {} ms)",
        opt(t.last_voted_slot()),
        opt(t.last_vote_timestamp_ms())
    );
    println!(
        "leader claim: {} (the next holder leads only above it)",
        opt(t.leader_claim())
    );
    println!("votes:      {}", t.votes().len());
    println!(
        "  {:>12} {:>6} {:>12} {:>14}",
        "slot", "conf", "lockout", "locked until"
    );
    for l in t.votes() {
        println!(
            "  {:>12} {:>6} {:>12} {:>14}",
            l.slot,
            l.confirmation_count,
            l.lockout(),
            l.last_locked_out_slot()
        );
    }
}
