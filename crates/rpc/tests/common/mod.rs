//! Shared test fixtures: a fixed snapshot, a server on 127.0.0.1:0, and a tiny raw
//! HTTP/1.1 client (so tests see exactly what goes over the wire).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use huione_keys::{Keypair, Pubkey};
use huione_rpc::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

pub fn key(seed: u8) -> Pubkey {
    Keypair::from_secret(&[seed; 32]).pubkey()
}

pub const SLOTS_PER_EPOCH: u64 = 64;

/// A snapshot of a 3-validator cluster at slot 200 (epoch 3, index 8).
pub fn snapshot() -> NodeSnapshot {
    let (a, b, c) = (key(1), key(2), key(3));
    let (va, vb, vc) = (key(11), key(12), key(13));
    let leaders = |epoch: u64| EpochLeaderSchedule {
        epoch,
        slot_leaders: (0..SLOTS_PER_EPOCH)
            .map(|i| [a, b, c][((i / 4) % 3) as usize])
            .collect(),
    };
    let vote = |voter: Pubkey, account: Pubkey, slot: u64, sig: u8| VoteTransaction {
        signature: Sig64([sig; 64]),
        authorized_voter: voter,
        vote_account: account,
        slots: vec![slot - 1, slot],
        hash: Hash32([slot as u8; 32]),
        timestamp: Some(1_700_000_000 + slot as i64),
        recent_blockhash: Hash32([sig; 32]),
        fee: 5000,
    };
    let blocks = (190..=200)
        .filter(|s| *s != 195) // slot 195 was skipped
        .map(|s| BlockInfo {
            slot: s,
            parent_slot: if s == 196 { 194 } else { s - 1 },
            blockhash: Hash32([s as u8; 32]),
            previous_blockhash: Hash32([(if s == 196 { 194 } else { s - 1 }) as u8; 32]),
            block_height: Some(s - 10),
            block_time: Some(1_700_000_000 + s as i64),
            leader: a,
            votes: vec![vote(a, va, s - 1, 1), vote(b, vb, s - 1, 2)],
        })
        .collect();
    let node = |pk: Pubkey, port: u16| ClusterNode {
        pubkey: pk,
        gossip: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        tvu: Some(SocketAddr::from(([127, 0, 0, 1], port + 1))),
        tpu: Some(SocketAddr::from(([127, 0, 0, 1], port + 2))),
        tpu_vote: Some(SocketAddr::from(([127, 0, 0, 1], port + 3))),
        rpc: Some(SocketAddr::from(([127, 0, 0, 1], port + 10))),
        version: Some("huione 0.1.0".into()),
        feature_set: Some(42),
        shred_version: Some(7),
        ..ClusterNode::default()
    };
    NodeSnapshot {
        identity: a,
        version: "0.1.0".into(),
        feature_set: 42,
        genesis_hash: Hash32([9; 32]),
        slots: PerCommitment {
            processed: 200,
            confirmed: 199,
            finalized: 168,
        },
        block_heights: PerCommitment {
            processed: 190,
            confirmed: 189,
            finalized: 158,
        },
        epoch_schedule: EpochSchedule::without_warmup(SLOTS_PER_EPOCH),
        transaction_count: 1234,
        health: Health::Ok,
        health_reason: None,
        vote_accounts: vec![
            VoteAccountInfo {
                vote_pubkey: va,
                node_pubkey: a,
                activated_stake: 1_000_000,
                commission: 10,
                epoch_vote_account: true,
                epoch_credits: vec![(2, 100, 50), (3, 120, 100)],
                last_vote: 199,
                root_slot: 168,
            },
            VoteAccountInfo {
                vote_pubkey: vb,
                node_pubkey: b,
                activated_stake: 2_000_000,
                commission: 0,
                epoch_vote_account: true,
                epoch_credits: vec![(3, 110, 100)],
                last_vote: 198,
                root_slot: 167,
            },
            // Delinquent: last vote far behind.
            VoteAccountInfo {
                vote_pubkey: vc,
                node_pubkey: c,
                activated_stake: 500_000,
                commission: 100,
                epoch_vote_account: true,
                epoch_credits: vec![],
                last_vote: 10,
                root_slot: 0,
            },
        ],
        cluster_nodes: vec![node(a, 8000), node(b, 8100), node(c, 8200)],
        leader_schedules: vec![leaders(3), leaders(4)],
        blocks,
        first_available_block: 100,
        ledger_snapshot: None,
        freshness: Default::default(),
    }
}

pub struct TestServer {
    pub server: RpcServer,
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub snapshots: watch::Sender<Arc<NodeSnapshot>>,
}

pub async fn start(config: RpcServerConfig) -> TestServer {
    start_with(snapshot(), config).await
}

pub async fn start_with(snap: NodeSnapshot, config: RpcServerConfig) -> TestServer {
    let (tx, rx) = watch::channel(Arc::new(snap));
    let metrics = Arc::new(Metrics::new());
    let server = RpcServer::bind("127.0.0.1:0".parse().unwrap(), config, rx, metrics.clone())
        .await
        .unwrap();
    TestServer {
        addr: server.local_addr(),
        server,
        metrics,
        snapshots: tx,
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends raw bytes and reads until the server closes (or 5 s pass).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

pub fn parse_response(bytes: &[u8]) -> HttpResponse {
    let text_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(bytes)));
    let head = std::str::from_utf8(&bytes[..text_end]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = bytes[text_end + 4..].to_vec();
    HttpResponse {
        status,
        headers,
        body,
    }
}

pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> HttpResponse {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    parse_response(&raw(addr, &req).await)
}

pub async fn post(addr: SocketAddr, body: &str) -> HttpResponse {
    http(addr, "POST", "/", body.as_bytes()).await
}

/// Calls one method and returns the whole JSON-RPC response.
pub async fn rpc(addr: SocketAddr, method: &str, params: Value) -> Value {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let r = post(addr, &body.to_string()).await;
    assert_eq!(
        r.status,
        200,
        "{method}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// Calls one method and returns its result, failing on an error.
pub async fn result(addr: SocketAddr, method: &str, params: Value) -> Value {
    let r = rpc(addr, method, params).await;
    assert!(r.get("error").is_none(), "{method}: {r}");
    assert_eq!(r["jsonrpc"], "2.0");
    assert_eq!(r["id"], 1);
    r["result"].clone()
}

/// Calls one method and returns its error object.
pub async fn error(addr: SocketAddr, method: &str, params: Value) -> Value {
    let r = rpc(addr, method, params).await;
    assert!(
        r.get("result").is_none(),
        "{method}: expected an error, got {r}"
    );
    r["error"].clone()
}
