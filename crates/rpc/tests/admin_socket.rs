//! The admin socket: round trips of every call through AdminClient → AdminServer → a fake
//! handler, typed errors, owner-only permissions, stale-socket handling, bad input.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use huione_keys::{Keypair, Pubkey};
use huione_rpc::admin::{admin_socket_path, RestartVerdict};
use huione_rpc::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
    voters: Mutex<Vec<Pubkey>>,
}

fn kp(seed: u8) -> Keypair {
    Keypair::from_secret(&[seed; 32])
}

impl Fake {
    fn log(&self, s: impl Into<String>) {
        self.calls.lock().unwrap().push(s.into());
    }
}

impl AdminHandler for Fake {
    async fn exit(&self) -> Result<(), AdminError> {
        self.log("exit");
        Ok(())
    }
    async fn contact_info(&self) -> Result<ContactInfo, AdminError> {
        self.log("contact_info");
        Ok(ContactInfo {
            identity: kp(1).pubkey(),
            gossip: Some("127.0.0.1:8001".parse().unwrap()),
            tvu: None,
            tpu: Some("127.0.0.1:8003".parse().unwrap()),
            tpu_vote: None,
            serve_repair: None,
            rpc: Some("127.0.0.1:8899".parse().unwrap()),
            shred_version: 7,
            version: "0.1.0".into(),
            started_at_ms: 1_700_000_000_000,
        })
    }
    async fn set_identity(
        &self,
        keypair: Keypair,
        require_tower: bool,
    ) -> Result<SetIdentityOutcome, AdminError> {
        self.log(format!("set_identity {} {require_tower}", keypair.pubkey()));
        if require_tower {
            return Err(AdminError::TowerRequired {
                identity: keypair.pubkey(),
                storage: "etcd https://127.0.0.1:2379".into(),
            });
        }
        Ok(SetIdentityOutcome {
            previous_identity: kp(2).pubkey(),
            identity: keypair.pubkey(),
            tower_loaded: true,
            tower_root: Some(100),
            lock_revision: Some(42),
        })
    }
    async fn authorized_voter_add(&self, keypair: Keypair) -> Result<(), AdminError> {
        self.voters.lock().unwrap().push(keypair.pubkey());
        Ok(())
    }
    async fn authorized_voter_remove_all(&self) -> Result<(), AdminError> {
        self.voters.lock().unwrap().clear();
        Ok(())
    }
    async fn status(&self) -> Result<MonitorStatus, AdminError> {
        Ok(MonitorStatus {
            identity: kp(1).pubkey(),
            vote_account: kp(11).pubkey(),
            version: "0.1.0".into(),
            slot: 200,
            confirmed_slot: 199,
            last_vote: Some(199),
            root: Some(168),
            role: Role::Primary,
            tower_storage: "etcd https://127.0.0.1:2379 (prefix /huione)".into(),
            lock: LockState {
                state: LockStateKind::Held,
                revision: Some(42),
                holder: None,
            },
            votes_withheld: 3,
            started_at_ms: 1,
            vote_wait: None,
        })
    }
    async fn restart_window(
        &self,
        identity: Option<Pubkey>,
    ) -> Result<RestartWindowInfo, AdminError> {
        Ok(RestartWindowInfo {
            identity: identity.unwrap_or(kp(1).pubkey()),
            current_slot: 200,
            upcoming_leader_slots: vec![204, 205, 206, 207],
            ms_per_slot: 400,
            caught_up: true,
            slots_behind: Some(0),
            delinquent_stake_percent: 0.0,
        })
    }
}

async fn start(dir: &Path) -> (AdminServer, Arc<Fake>, Arc<Metrics>) {
    let fake = Arc::new(Fake::default());
    let metrics = Arc::new(Metrics::new());
    let server = AdminServer::start(
        dir,
        fake.clone(),
        metrics.clone(),
        AdminServerConfig::default(),
    )
    .await
    .unwrap();
    (server, fake, metrics)
}

#[tokio::test]
async fn every_call_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (server, fake, metrics) = start(dir.path()).await;
    let mut c = AdminClient::connect(dir.path()).await.unwrap();

    let info = c.contact_info().await.unwrap();
    assert_eq!(info.identity, kp(1).pubkey());
    assert_eq!(info.shred_version, 7);

    let out = c.set_identity(&kp(5), false).await.unwrap();
    assert_eq!(out.identity, kp(5).pubkey());
    assert_eq!(out.lock_revision, Some(42));

    match c.set_identity(&kp(5), true).await {
        Err(AdminClientError::Admin(AdminError::TowerRequired { identity, .. })) => {
            assert_eq!(identity, kp(5).pubkey())
        }
        other => panic!("expected TowerRequired, got {other:?}"),
    }

    c.authorized_voter_add(&kp(6)).await.unwrap();
    c.authorized_voter_add(&kp(7)).await.unwrap();
    assert_eq!(
        *fake.voters.lock().unwrap(),
        vec![kp(6).pubkey(), kp(7).pubkey()]
    );
    c.authorized_voter_remove_all().await.unwrap();
    assert!(fake.voters.lock().unwrap().is_empty());

    let s = c.status().await.unwrap();
    assert_eq!(s.role, Role::Primary);
    assert_eq!(s.lock.state, LockStateKind::Held);
    assert_eq!(s.root, Some(168));

    let w = c.restart_window(None).await.unwrap();
    assert_eq!(w.identity, kp(1).pubkey());
    let other = kp(9).pubkey();
    assert_eq!(c.restart_window(Some(other)).await.unwrap().identity, other);
    assert_eq!(w.next_leader_slot(), Some(204));
    assert_eq!(w.ms_until_next_leader_slot(), Some(1600));
    assert!(matches!(w.verdict(10_000, 5.0), RestartVerdict::Wait(_)));

    c.exit().await.unwrap();
    assert_eq!(
        *fake.calls.lock().unwrap(),
        vec![
            "contact_info".to_string(),
            format!("set_identity {} false", kp(5).pubkey()),
            format!("set_identity {} true", kp(5).pubkey()),
            "exit".to_string(),
        ]
    );
    assert_eq!(metrics.admin_requests.get("setIdentity"), 2);
    server.shutdown().await;
    assert!(
        !admin_socket_path(dir.path()).exists(),
        "shutdown removes the socket"
    );
}

#[tokio::test]
async fn socket_is_owner_only_and_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, _) = start(dir.path()).await;
    let meta = std::fs::metadata(admin_socket_path(dir.path())).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(entries, vec!["admin.rpc".to_string()]);
    server.shutdown().await;
}

#[tokio::test]
async fn stale_socket_is_replaced_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = admin_socket_path(dir.path());
    // A stale socket: bound, then the listener went away (as after a crash).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let (server, _, _) = start(dir.path()).await;
    AdminClient::connect(dir.path())
        .await
        .unwrap()
        .status()
        .await
        .unwrap();

    // A second validator on the same ledger is refused, and the first keeps working.
    let err = AdminServer::start(
        dir.path(),
        Arc::new(Fake::default()),
        Arc::new(Metrics::new()),
        AdminServerConfig::default(),
    )
    .await
    .err()
    .expect("second server must fail");
    assert!(
        matches!(err, AdminServerError::AlreadyRunning { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--ledger"));
    AdminClient::connect(dir.path())
        .await
        .unwrap()
        .status()
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn refuses_to_replace_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(admin_socket_path(dir.path()), b"important").unwrap();
    let err = AdminServer::start(
        dir.path(),
        Arc::new(Fake::default()),
        Arc::new(Metrics::new()),
        AdminServerConfig::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, AdminServerError::NotASocket { .. }), "{err}");
    assert_eq!(
        std::fs::read(admin_socket_path(dir.path())).unwrap(),
        b"important"
    );
}

#[tokio::test]
async fn connect_error_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let err = AdminClient::connect(dir.path()).await.err().unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains(&admin_socket_path(dir.path()).display().to_string()),
        "{msg}"
    );
    assert!(
        msg.contains("Is huione-validator running with --ledger"),
        "{msg}"
    );
}

async fn line_exchange(stream: &mut BufReader<UnixStream>, line: &[u8]) -> Option<Value> {
    stream.get_mut().write_all(line).await.unwrap();
    let mut out = String::new();
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read_line(&mut out))
        .await
        .unwrap()
        .unwrap_or(0);
    (n > 0).then(|| serde_json::from_str(&out).unwrap())
}

#[tokio::test]
async fn bad_requests_are_answered_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, metrics) = start(dir.path()).await;
    let mut s = BufReader::new(
        UnixStream::connect(admin_socket_path(dir.path()))
            .await
            .unwrap(),
    );

    let v = line_exchange(&mut s, b"{garbage\n").await.unwrap();
    assert_eq!(v["error"]["code"], -32700);
    let v = line_exchange(
        &mut s,
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"launchMissiles\"}\n",
    )
    .await
    .unwrap();
    assert_eq!(v["error"]["code"], -32601);
    let v = line_exchange(
        &mut s,
        b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"setIdentity\",\"params\":{\"keypair\":[1,2,3]}}\n",
    )
    .await
    .unwrap();
    assert_eq!(v["error"]["code"], -32000);
    assert_eq!(v["error"]["data"]["kind"], "invalid_keypair");
    // An inconsistent keypair (public half does not match the secret half).
    let mut bytes = kp(9).to_bytes().to_vec();
    bytes[40] ^= 1;
    let req = serde_json::json!({"jsonrpc":"2.0","id":3,"method":"setIdentity","params":{"keypair": bytes}});
    let v = line_exchange(&mut s, format!("{req}\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(v["error"]["data"]["kind"], "invalid_keypair");
    let v = line_exchange(
        &mut s,
        b"{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"status\",\"params\":[1]}\n",
    )
    .await
    .unwrap();
    assert_eq!(v["error"]["code"], -32602);
    // Still usable after all that.
    let v = line_exchange(
        &mut s,
        b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"status\"}\n",
    )
    .await
    .unwrap();
    assert_eq!(v["result"]["slot"], 200);

    // An oversized line gets one error and the connection is closed.
    let mut big = vec![b'x'; 70 * 1024];
    big.push(b'\n');
    let v = line_exchange(&mut s, &big).await.unwrap();
    assert_eq!(v["error"]["code"], -32600);
    let mut rest = String::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_line(&mut rest))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "connection closed after an oversized request");

    assert_eq!(metrics.rpc_rejected.get("admin_parse_error"), 1);
    assert_eq!(metrics.rpc_rejected.get("admin_method_not_found"), 1);
    assert_eq!(metrics.rpc_rejected.get("admin_invalid_params"), 1);
    assert_eq!(metrics.rpc_rejected.get("admin_too_large"), 1);
    // The server still serves new connections.
    AdminClient::connect(dir.path())
        .await
        .unwrap()
        .status()
        .await
        .unwrap();
    server.shutdown().await;
}
