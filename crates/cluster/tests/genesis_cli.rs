//! `huione-genesis` as a user runs it: a valid file from keypair files and pubkeys, and
//! clear errors (with no file written) for bad input.

use std::path::Path;
use std::process::{Command, Output};

use huione_cluster::genesis::read_genesis;
use huione_keys::Keypair;

fn genesis_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_huione-genesis"))
        .args(args)
        .output()
        .unwrap()
}

fn key(dir: &Path, name: &str) -> (String, String) {
    let k = Keypair::generate().unwrap();
    let path = dir.join(name);
    k.write_file(&path, false).unwrap();
    (path.to_str().unwrap().to_string(), k.pubkey().to_string())
}

#[test]
fn writes_a_valid_genesis_from_keypair_files_and_pubkeys() {
    let dir = tempfile::tempdir().unwrap();
    let (id_a, id_a_pk) = key(dir.path(), "a-identity.json");
    let (vote_a, vote_a_pk) = key(dir.path(), "a-vote.json");
    let (_, id_b) = key(dir.path(), "b-identity.json");
    let (_, vote_b) = key(dir.path(), "b-vote.json");
    let out_path = dir.path().join("genesis.json");
    let before = huione_os::clock::now_ms();
    let out = genesis_cmd(&[
        "--out",
        out_path.to_str().unwrap(),
        "--validator",
        &format!("{id_a}:{vote_a}:1000"),
        "--validator",
        &format!("{id_b}:{vote_b}:3000"),
        "--slot-ms",
        "100",
        "--slots-per-epoch",
        "64",
        "--start-in-ms",
        "5000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g = read_genesis(&out_path).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&g.hash.to_string()), "{stdout}");
    assert_eq!(
        (g.slot_duration_ms, g.slots_per_epoch, g.total_stake()),
        (100, 64, 4000)
    );
    assert!(
        g.start_time_ms >= before + 5000 && g.start_time_ms <= huione_os::clock::now_ms() + 5000
    );
    let v = &g.validators;
    assert_eq!(v.len(), 2);
    assert_eq!(
        (v[0].identity.to_string(), v[0].vote_account.to_string()),
        (id_a_pk, vote_a_pk)
    );
    assert_eq!(
        (v[1].identity.to_string(), v[1].vote_account.to_string()),
        (id_b, vote_b)
    );
    for v in v {
        assert_eq!(
            v.authorized_voter, v.identity,
            "the identity is the authorized voter"
        );
    }
    // An absolute start time; refuses to overwrite unless --force.
    let spec = format!("{id_a}:{vote_a}:1");
    let args = [
        "--out",
        out_path.to_str().unwrap(),
        "--validator",
        &spec,
        "--start-time-ms",
        "12345",
    ];
    let out = genesis_cmd(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--force") && err.contains("genesis.json"),
        "{err}"
    );
    let mut forced = args.to_vec();
    forced.push("--force");
    assert!(genesis_cmd(&forced).status.success());
    let g = read_genesis(&out_path).unwrap();
    assert_eq!(
        (g.start_time_ms, g.slot_duration_ms, g.slots_per_epoch),
        (12345, 400, 432)
    );
}

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (id, id_pk) = key(dir.path(), "id.json");
    let (vote, _) = key(dir.path(), "vote.json");
    let (_, other_id) = key(dir.path(), "other-id.json");
    let (other_vote, _) = key(dir.path(), "other-vote.json");
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "[1,2,3]").unwrap();
    let junk = junk.to_str().unwrap().to_string();
    let out_path = dir.path().join("genesis.json");
    let out_str = out_path.to_str().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "--validator"),
        (
            vec!["--validator".into(), format!("{id}:{vote}")],
            "expected three",
        ),
        (
            vec!["--validator".into(), format!("{id}:{vote}:ten")],
            "not a whole number",
        ),
        (
            vec!["--validator".into(), format!("{id}:missing.json:1")],
            "neither an existing keypair file nor a base58 pubkey",
        ),
        (
            vec!["--validator".into(), format!("{junk}:{vote}:1")],
            "expected 64",
        ),
        (
            vec!["--validator".into(), format!("{id}:{vote}:0")],
            "no validators with stake",
        ),
        (
            vec![
                "--validator".into(),
                format!("{id}:{vote}:1"),
                "--slots-per-epoch".into(),
                "30".into(),
            ],
            "multiple of 4",
        ),
        (
            vec![
                "--validator".into(),
                format!("{id}:{vote}:1"),
                "--slot-ms".into(),
                "0".into(),
            ],
            "at least 1 ms",
        ),
        (
            vec![
                "--validator".into(),
                format!("{id}:{vote}:1"),
                "--validator".into(),
                format!("{other_id}:{vote}:1"),
            ],
            "listed twice",
        ),
        (
            vec![
                "--validator".into(),
                format!("{id}:{vote}:1"),
                "--validator".into(),
                format!("{id_pk}:{other_vote}:1"),
            ],
            "listed twice",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["--out", out_str];
        args.extend(extra.iter().map(String::as_str));
        let out = genesis_cmd(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} succeeded");
        assert!(err.contains(want), "{extra:?}: want {want:?} in: {err}");
        assert!(!out_path.exists(), "{extra:?} wrote a file");
    }
}
