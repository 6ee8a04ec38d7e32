//! `huione-audit` over ledgers: clean logs pass, a double vote is reported, votes that
//! could not be lockout-checked fail the audit unless accepted.

use huione_core::audit::{AuditRecord, BlockRecord, VoteRecord};
use huione_core::{Genesis, GenesisValidator, Hash};
use huione_keys::Pubkey;

fn ledger_with(
    dir: &std::path::Path,
    name: &str,
    genesis: &Genesis,
    records: &[AuditRecord],
) -> std::path::PathBuf {
    let l = dir.join(name);
    std::fs::create_dir_all(&l).unwrap();
    std::fs::write(l.join("genesis.json"), serde_json::to_vec(genesis).unwrap()).unwrap();
    let text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(l.join("audit.jsonl"), text).unwrap();
    l
}

fn vote(slot: u64, hash: u8, instance: &str) -> AuditRecord {
    AuditRecord::Vote(VoteRecord {
        vote_account: Pubkey::from_seed_byte(2),
        slot,
        hash: Hash([hash; 32]),
        node: Pubkey::from_seed_byte(1),
        instance: instance.into(),
        time_ms: slot * 100,
    })
}

fn block(slot: u64, hash: u8, parent_slot: u64, parent_hash: Hash) -> AuditRecord {
    AuditRecord::Block(BlockRecord {
        leader: Pubkey::from_seed_byte(1),
        slot,
        hash: Hash([hash; 32]),
        parent_slot,
        parent_hash,
        instance: "a".into(),
        time_ms: slot * 100,
    })
}

fn audit(ledgers: &[&std::path::PathBuf], extra: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_huione-audit"))
        .args(ledgers)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn genesis() -> Genesis {
    Genesis::new(
        vec![GenesisValidator {
            identity: Pubkey::from_seed_byte(1),
            vote_account: Pubkey::from_seed_byte(2),
            authorized_voter: Pubkey::from_seed_byte(1),
            stake: 1,
        }],
        400,
        64,
        0,
    )
    .unwrap()
}

#[test]
fn audit_reports_a_double_vote_across_two_machines() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = genesis();
    let blocks = [block(5, 1, 0, genesis.hash), block(6, 2, 5, Hash([1; 32]))];
    let a = ledger_with(
        dir.path(),
        "primary",
        &genesis,
        &[blocks[0].clone(), blocks[1].clone(), vote(5, 1, "a")],
    );
    let b = ledger_with(dir.path(), "secondary", &genesis, &[vote(6, 2, "b")]);
    let (code, text, err) = audit(&[&a, &b], &[]);
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(
        text.contains("2 votes") && text.contains("0 violations") && text.contains("0 unresolved"),
        "{text}"
    );

    let c = ledger_with(dir.path(), "standby", &genesis, &[vote(5, 3, "c")]);
    let (code, text, _) = audit(&[&a, &b, &c], &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("VIOLATION") && text.contains("double vote"),
        "{text}"
    );
}

/// A vote whose block is in no ledger given cannot be lockout-checked: the audit does not
/// pass on it ("0 violations" would claim more than was checked) unless told to.
#[test]
fn audit_fails_when_votes_could_not_be_lockout_checked() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = genesis();
    // Two votes, no block records: the second vote's ancestry is unknown.
    let a = ledger_with(
        dir.path(),
        "primary",
        &genesis,
        &[vote(5, 1, "a"), vote(6, 2, "a")],
    );
    let (code, text, err) = audit(&[&a], &[]);
    assert_eq!(code, Some(3), "{text}{err}");
    assert!(text.contains("1 unresolved votes"), "{text}");
    assert!(
        err.contains("INCOMPLETE") && err.contains("could not be lockout-checked"),
        "{err}"
    );
    let (code, text, err) = audit(&[&a], &["--allow-unresolved"]);
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(err.contains("warning"), "{err}");
    let (_, json, _) = audit(&[&a], &["--json", "--allow-unresolved"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["unresolved_votes"], 1, "{json}");
}

/// A ledger given without an audit log, or with a torn last line, is an error naming the
/// file, never "0 votes".
#[test]
fn audit_refuses_a_missing_or_torn_log() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = genesis();
    let a = ledger_with(dir.path(), "primary", &genesis, &[vote(5, 1, "a")]);
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, _, err) = audit(&[&a, &empty], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no audit log") && err.contains("empty"),
        "{err}"
    );
    let log = a.join("audit.jsonl");
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str(&serde_json::to_string(&vote(6, 2, "a")).unwrap()[..40]);
    std::fs::write(&log, text).unwrap();
    let (code, _, err) = audit(&[&a], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("primary/audit.jsonl line 2") && err.contains("torn"),
        "{err}"
    );
    // An unreadable log: the OS error is said once (it was printed twice, as the
    // message's own text and again as its cause).
    let odd = dir.path().join("odd");
    std::fs::create_dir_all(odd.join("audit.jsonl")).unwrap();
    std::fs::copy(a.join("genesis.json"), odd.join("genesis.json")).unwrap();
    let (code, _, err) = audit(&[&odd], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("odd/audit.jsonl"), "{err}");
    assert_eq!(err.matches("os error").count(), 1, "{err}");
}
