//! `huione-audit LEDGER...`: proves from what the nodes recorded that no vote account
//! voted twice for a slot or broke its lockouts, and that no leader produced two blocks
//! for one slot. Reads `<ledger>/audit.jsonl` of every ledger given (all the machines
//! that ever ran an identity) and the genesis from the first ledger. Rotated segments
//! (`audit-<seq>.jsonl`) are read in order before `audit.jsonl`.
//!
//! Exit codes: 0 clean; 1 a violation was found; 3 no violation, but some votes could
//! not be lockout-checked because the blocks they voted on (or their ancestors) are in
//! no ledger given (pass every validator's ledger, or `--allow-unresolved` to accept a
//! partial check); 2 a log could not be read (a torn last line is named with its file
//! and line).

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
    /// Pass even if some votes could not be lockout-checked (their ancestry is in no
    /// ledger given). They are still counted and reported.
    #[arg(long)]
    allow_unresolved: bool,
}

/// What the audit found, for the exit code.
enum Outcome {
    Clean,
    Violations,
    Unresolved,
}

fn main() -> ExitCode {
    huione_os::process::restore_default_sigpipe();
    match run(Args::parse()) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Violations) => ExitCode::from(1),
        Ok(Outcome::Unresolved) => ExitCode::from(3),
        Err(e) => {
            eprintln!("error: {}", huione_os::process::error_text(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<Outcome> {
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
    let unresolved = auditor.unresolved_votes;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "ledgers": args.ledgers,
                "votes": votes,
                "blocks": blocks,
                "unresolved_votes": unresolved,
                "violations": violations,
            })
        );
    } else {
        println!(
            "{} ledgers, {votes} votes, {blocks} blocks, {} violations, {unresolved} \
             unresolved votes",
            args.ledgers.len(),
            violations.len()
        );
        for v in violations {
            println!("VIOLATION: {v}");
        }
    }
    if !violations.is_empty() {
        return Ok(Outcome::Violations);
    }
    if unresolved > 0 {
        let what = format!(
            "{unresolved} of {votes} votes could not be lockout-checked: the blocks they \
             voted on (or their ancestors) are in no ledger given. Pass the ledger of every \
             validator (blocks are recorded by the node that produced them), or \
             --allow-unresolved to accept a partial check"
        );
        if !args.allow_unresolved {
            eprintln!("INCOMPLETE: {what}");
            return Ok(Outcome::Unresolved);
        }
        eprintln!("warning: {what}");
    }
    Ok(Outcome::Clean)
}
