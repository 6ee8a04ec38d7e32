//! `huione-audit` over ledgers: clean logs pass, a double vote is reported.

use huione_core::audit::{AuditRecord, VoteRecord};
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

#[test]
fn audit_reports_a_double_vote_across_two_machines() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = Genesis::new(
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
    .unwrap();
    let a = ledger_with(dir.path(), "primary", &genesis, &[vote(5, 1, "a")]);
    let b = ledger_with(dir.path(), "secondary", &genesis, &[vote(6, 2, "b")]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_huione-audit"))
        .args([&a, &b])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("2 votes") && text.contains("0 violations"),
        "{text}"
    );

    let c = ledger_with(dir.path(), "standby", &genesis, &[vote(5, 3, "c")]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_huione-audit"))
        .args([&a, &b, &c])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("VIOLATION") && text.contains("double vote"),
        "{text}"
    );
}
