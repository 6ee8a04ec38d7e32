//! Property tests with a seeded generator (no extra crates): random and mutated inputs
//! at the JSON-RPC layer (pure) and at the HTTP server (real sockets). Properties: no
//! panic; every answer is a valid JSON-RPC response; the server keeps serving.
//! Reproduce a failure with HUIONE_FUZZ_SEED=<seed printed>; HUIONE_FUZZ_ITERS scales it.

mod common;

use std::time::Duration;

use common::*;
use huione_rpc::{answer_body, Metrics, RpcServerConfig};
use serde_json::{json, Value};

/// xorshift64*: deterministic, good enough to explore inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let n = self.below(max_len + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn seed() -> u64 {
    std::env::var("HUIONE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_1234_ABCD_0001)
}

fn iters(default: usize) -> usize {
    std::env::var("HUIONE_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

const VALID: &[&str] = &[
    r#"{"jsonrpc":"2.0","id":1,"method":"getSlot","params":[{"commitment":"processed"}]}"#,
    r#"[{"jsonrpc":"2.0","id":1,"method":"getBlock","params":[196,{"encoding":"base64","commitment":"confirmed"}]},{"jsonrpc":"2.0","id":2,"method":"getLeaderSchedule","params":[null,{"identity":"x"}]}]"#,
    r#"{"jsonrpc":"2.0","id":"a","method":"getVoteAccounts","params":[{"votePubkey":"11111111111111111111111111111111","delinquentSlotDistance":5}]}"#,
    r#"{"jsonrpc":"2.0","id":3,"method":"getEpochInfo"}"#,
];

/// Flips, inserts, deletes or splices bytes of a valid request.
fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            1 => {
                let i = rng.below(v.len() + 1);
                let junk = rng.bytes(8);
                v.splice(i..i, junk);
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                let j = (i + rng.below(8)).min(v.len());
                v.drain(i..j);
            }
            3 => {
                let i = rng.below(v.len() + 1);
                v.truncate(i);
            }
            _ => {
                // Swap in a structurally interesting token.
                let tokens: &[&[u8]] = &[
                    b"null",
                    b"[]",
                    b"{}",
                    b"-1",
                    b"1e999",
                    b"\"\\u0000\"",
                    b"18446744073709551616",
                    b"true",
                ];
                let t = tokens[rng.below(tokens.len())];
                let i = rng.below(v.len() + 1);
                v.splice(i..i, t.iter().copied());
            }
        }
    }
    v
}

fn assert_valid_response(v: &Value, input: &[u8], seed: u64) {
    let check_one = |r: &Value| {
        assert_eq!(
            r["jsonrpc"],
            "2.0",
            "seed {seed}: {r} for {:?}",
            String::from_utf8_lossy(input)
        );
        assert!(
            r.get("result").is_some() != r.get("error").is_some(),
            "seed {seed}: exactly one of result/error: {r}"
        );
        if let Some(e) = r.get("error") {
            assert!(
                e["code"].is_i64() && e["message"].is_string(),
                "seed {seed}: {e}"
            );
        }
    };
    match v {
        Value::Array(items) => items.iter().for_each(check_one),
        other => check_one(other),
    }
}

#[test]
fn random_bytes_at_the_json_rpc_layer() {
    let seed = seed();
    println!("HUIONE_FUZZ_SEED={seed}");
    let mut rng = Rng(seed);
    let snap = snapshot();
    let metrics = Metrics::new();
    for _ in 0..iters(20_000) {
        let input = if rng.below(3) == 0 {
            rng.bytes(256)
        } else {
            let base = VALID[rng.below(VALID.len())].as_bytes();
            mutate(&mut rng, base)
        };
        if let Some(v) = answer_body(&input, &snap, &metrics, 100) {
            assert_valid_response(&v, &input, seed);
        }
    }
    // Plenty were rejected, and every rejection was counted.
    assert!(metrics.rpc_rejected.total() > 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_at_the_http_server() {
    let seed = seed();
    println!("HUIONE_FUZZ_SEED={seed}");
    let t = start(RpcServerConfig {
        header_read_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(500),
        max_body_bytes: 4096,
        ..RpcServerConfig::default()
    })
    .await;
    let mut rng = Rng(seed ^ 0xFFFF);
    let n = iters(300).max(10);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let body = VALID[rng.below(VALID.len())];
        let valid = format!(
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let input = match rng.below(3) {
            0 => rng.bytes(512),
            _ => mutate(&mut rng, valid.as_bytes()),
        };
        let addr = t.addr;
        tasks.spawn(async move { (i, raw(addr, &input).await) });
        if tasks.len() >= 16 {
            tasks.join_next().await;
        }
    }
    while let Some(r) = tasks.join_next().await {
        let (_, out) = r.expect("client task");
        // Whatever came back is an HTTP response (or nothing, when the input was cut).
        if !out.is_empty() {
            assert!(
                out.starts_with(b"HTTP/1.1 "),
                "seed {seed}: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
    }
    assert_eq!(
        result(t.addr, "getSlot", Value::Null).await,
        json!(168),
        "seed {seed}: still serving"
    );
    let text = http(t.addr, "GET", "/metrics", b"").await.body;
    huione_rpc::metrics::check_exposition(std::str::from_utf8(&text).unwrap()).unwrap();
    t.server.shutdown().await;
}
