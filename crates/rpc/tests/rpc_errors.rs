//! Bad input at the JSON-RPC and HTTP layers: each is answered with the right code,
//! counted in `huione_rpc_rejected_total{reason}`, and leaves the server serving.

mod common;

use std::time::{Duration, Instant};

use common::*;
use huione_rpc::RpcServerConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn still_serving(addr: std::net::SocketAddr) {
    assert_eq!(result(addr, "getSlot", Value::Null).await, json!(168));
}

#[tokio::test]
async fn json_rpc_error_codes() {
    let t = start(RpcServerConfig::default()).await;
    let cases: &[(&str, i64, &str)] = &[
        ("{not json", -32700, "parse_error"),
        ("", -32700, "parse_error"),
        ("[]", -32600, "invalid_request"),
        (r#"{"jsonrpc":"2.0","id":1}"#, -32600, "invalid_request"),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"getSlot"}"#,
            -32600,
            "invalid_request",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"getSlot","params":7}"#,
            -32600,
            "invalid_request",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"noSuchMethod"}"#,
            -32601,
            "method_not_found",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"getSlot","params":[1,2,3]}"#,
            -32602,
            "invalid_params",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"getSlot","params":[5]}"#,
            -32602,
            "invalid_params",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"getBlock","params":["x"]}"#,
            -32602,
            "invalid_params",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"getIdentity","params":[1]}"#,
            -32602,
            "invalid_params",
        ),
    ];
    for (body, code, reason) in cases {
        let before = t.metrics.rpc_rejected.get(reason);
        let r = post(t.addr, body).await;
        assert_eq!(r.status, 200, "{body}");
        let v = r.json();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["error"]["code"], *code, "{body} → {v}");
        assert_eq!(
            t.metrics.rpc_rejected.get(reason),
            before + 1,
            "{body} counted as {reason}"
        );
    }
    let v = post(t.addr, "{").await.json();
    assert_eq!(v["error"]["message"], "Parse error");
    assert_eq!(v["id"], Value::Null);
    still_serving(t.addr).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn batches() {
    let t = start(RpcServerConfig {
        max_batch_len: 4,
        ..RpcServerConfig::default()
    })
    .await;
    let body = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "getSlot"},
        {"jsonrpc": "2.0", "id": "two", "method": "getIdentity"},
        {"jsonrpc": "2.0", "method": "getSlot"},
        {"jsonrpc": "2.0", "id": 4, "method": "nope"},
    ]);
    let v = post(t.addr, &body.to_string()).await.json();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 3, "the notification gets no response: {v}");
    assert_eq!(items[0], json!({"jsonrpc": "2.0", "result": 168, "id": 1}));
    assert_eq!(items[1]["id"], "two");
    assert_eq!(items[2]["error"]["code"], -32601);
    // Too many calls.
    let five: Vec<Value> = (0..5)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "getSlot"}))
        .collect();
    let v = post(t.addr, &Value::Array(five).to_string()).await.json();
    assert_eq!(v["error"]["code"], -32600);
    // Only notifications: no content.
    let r = post(t.addr, r#"[{"jsonrpc":"2.0","method":"getSlot"}]"#).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    t.server.shutdown().await;
}

#[tokio::test]
async fn oversized_body_gets_413() {
    let t = start(RpcServerConfig {
        max_body_bytes: 1024,
        ..RpcServerConfig::default()
    })
    .await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"getSlot","pad":"{}"}}"#,
        "x".repeat(2000)
    );
    let r = post(t.addr, &big).await;
    assert_eq!(r.status, 413);
    // Chunked, with no content-length: the limit applies while reading.
    let mut req =
        b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..3 {
        req.extend_from_slice(format!("{:x}\r\n{}\r\n", 600, "y".repeat(600)).as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = parse_response(&raw(t.addr, &req).await);
    assert_eq!(r.status, 413);
    assert_eq!(t.metrics.rpc_rejected.get("body_too_large"), 2);
    still_serving(t.addr).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let t = start(RpcServerConfig {
        max_header_bytes: 8192,
        ..RpcServerConfig::default()
    })
    .await;
    let req = format!(
        "POST / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\ncontent-length: 2\r\n\r\n{{}}",
        "a".repeat(20_000)
    );
    let out = raw(t.addr, req.as_bytes()).await;
    let r = parse_response(&out);
    assert_eq!(r.status, 431);
    // The counter moves when the connection task ends; give it a moment.
    for _ in 0..50 {
        if t.metrics.rpc_rejected.get("header_too_large") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(t.metrics.rpc_rejected.get("header_too_large"), 1);
    still_serving(t.addr).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn garbage_http_gets_400() {
    let t = start(RpcServerConfig::default()).await;
    let out = raw(t.addr, b"\x00\x01\x02 garbage \xff\r\n\r\n").await;
    assert!(
        out.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    for _ in 0..50 {
        if t.metrics.rpc_rejected.get("bad_http") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(t.metrics.rpc_rejected.get("bad_http"), 1);
    still_serving(t.addr).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn wrong_method_and_path() {
    let t = start(RpcServerConfig::default()).await;
    let r = http(t.addr, "GET", "/", b"").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = http(t.addr, "POST", "/nope", b"{}").await;
    assert_eq!(r.status, 404);
    assert_eq!(t.metrics.rpc_rejected.get("method_not_allowed"), 1);
    assert_eq!(t.metrics.rpc_rejected.get("not_found"), 1);
    t.server.shutdown().await;
}

#[tokio::test]
async fn slow_body_times_out_with_408() {
    let t = start(RpcServerConfig {
        request_timeout: Duration::from_millis(300),
        ..RpcServerConfig::default()
    })
    .await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"jsonrpc\"")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("server closes the connection")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(parse_response(&out).status, 408);
    assert_eq!(t.metrics.rpc_rejected.get("timeout"), 1);
    still_serving(t.addr).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let t = start(RpcServerConfig {
        header_read_timeout: Duration::from_millis(300),
        ..RpcServerConfig::default()
    })
    .await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("server closes a connection that never finishes its headers")
        .ok();
    for _ in 0..50 {
        if t.metrics.rpc_rejected.get("header_timeout") >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(t.metrics.rpc_rejected.get("header_timeout") >= 1);
    still_serving(t.addr).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn connection_limit_answers_503() {
    let t = start(RpcServerConfig {
        max_connections: 2,
        ..RpcServerConfig::default()
    })
    .await;
    // Two idle connections take both slots.
    let _a = TcpStream::connect(t.addr).await.unwrap();
    let _b = TcpStream::connect(t.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = raw(
        t.addr,
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    assert!(
        out.starts_with(b"HTTP/1.1 503"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(t.metrics.rpc_rejected.get("connection_limit"), 1);
    drop((_a, _b));
    // Slots free up once those connections close.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let out = raw(
            t.addr,
            b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        if out.starts_with(b"HTTP/1.1 200") {
            ok = true;
            break;
        }
    }
    assert!(ok, "server serves again after the idle connections closed");
    t.server.shutdown().await;
}

#[tokio::test]
async fn keep_alive_serves_several_requests() {
    let t = start(RpcServerConfig::default()).await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"getSlot"}"#;
    let one = format!(
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let last = format!(
        "POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(format!("{one}{one}{last}").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
    assert_eq!(t.metrics.rpc_requests.get("getSlot"), 3);
    t.server.shutdown().await;
}

#[tokio::test]
async fn body_just_under_the_limit_is_served() {
    let t = start(RpcServerConfig::default()).await;
    let pad = "x".repeat(60 * 1024);
    let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"getSlot","pad":"{pad}"}}"#);
    assert!(body.len() < 64 * 1024);
    let r = post(t.addr, &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"], 168);
    t.server.shutdown().await;
}
