//! `huione-keygen` as a user runs it.

use std::process::Command;

fn keygen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_huione-keygen"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn new_then_pubkey_agree_and_file_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("validator-keypair.json");
    let p = path.to_str().unwrap();
    let out = keygen(&["new", "-o", p, "--silent"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = keygen(&["pubkey", p]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), created);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The file is solana-keygen's format: 64 numbers.
    let bytes: Vec<u8> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(bytes.len(), 64);
}

#[test]
fn new_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.json");
    let p = path.to_str().unwrap();
    assert!(keygen(&["new", "-o", p]).status.success());
    let before = std::fs::read(&path).unwrap();
    let out = keygen(&["new", "-o", p]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--force") && err.contains("id.json"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the key was not touched"
    );
    assert!(keygen(&["new", "-o", p, "--force"]).status.success());
    assert_ne!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn pubkey_of_a_bad_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8]); 4] = [
        ("empty.json", b""),
        ("short.json", b"[1,2,3]"),
        ("garbage.json", b"\xff\xfe not json"),
        ("text.json", b"{\"key\": 1}"),
    ];
    for (name, content) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let out = keygen(&["pubkey", path.to_str().unwrap()]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(name), "{name}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = keygen(&["pubkey", dir.path().join("missing.json").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.json"));
}
