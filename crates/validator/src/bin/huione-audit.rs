//! `huione-audit LEDGER...`: proves from what the nodes recorded that no vote account
//! voted twice for a slot or broke its lockouts, and that no leader produced two blocks
//! for one slot. Reads `<ledger>/audit.jsonl` of every ledger given (all the machines
//! that ever ran an identity) and the genesis from the first ledger. Exit code 1 if any
//! violation is found. Rotated segments (`audit-<seq>.jsonl`) are read in order before
//! `audit.jsonl`; a torn last line is an error naming the file and line (exit code 2).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use huione_core::audit::{AuditRecord, Auditor};
use huione_core::Genesis;

#[derive(Parser)]
#[command(
    name = "huione-audit",
    version,
    about = "Check recorded votes and blocks for safety violations"
)]
struct Args {
    /// Ledger directories (each has audit.jsonl and maybe rotated audit-<seq>.jsonl).
    #[arg(required = true)]
    ledgers: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    let genesis_path = args.ledgers[0].join("genesis.json");
    let genesis: Genesis = serde_json::from_slice(
        &std::fs::read(&genesis_path)
            .with_context(|| format!("cannot read {}", genesis_path.display()))?,
    )
    .with_context(|| format!("{} is not a huione genesis", genesis_path.display()))?;
    let mut records = Vec::new();
    for l in &args.ledgers {
        records.extend(huione_validator::ledger::audit_log::read_records(l)?);
    }
    let votes = records
        .iter()
        .filter(|r| matches!(r, AuditRecord::Vote(_)))
        .count();
    let blocks = records.len() - votes;
    let auditor = Auditor::audit_all(genesis.hash, &records);
    let violations = auditor.violations();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"ledgers": args.ledgers, "votes": votes, "blocks": blocks, "violations": violations})
        );
    } else {
        println!(
            "{} ledgers, {votes} votes, {blocks} blocks, {} violations",
            args.ledgers.len(),
            violations.len()
        );
        for v in violations {
            println!("VIOLATION: {v}");
        }
    }
    Ok(violations.is_empty())
}
