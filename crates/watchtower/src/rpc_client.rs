//! A minimal JSON-RPC-over-HTTP/1.1 client for the probes: one connection per call
//! (`Connection: close`), every step bounded by one deadline, the answer bounded in size.
//! Plain `http://` only: validator RPC ports are not TLS.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer read (getClusterNodes / getVoteAccounts of a big cluster fit easily).
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Why a probe got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Connection refused/reset: nothing listens (the process is gone).
    #[error("cannot connect to {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// No complete answer within the deadline (frozen, overloaded, or cut off).
    #[error("no answer from {addr} within {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u64 },
    /// An answer that is not JSON-RPC over HTTP 200.
    #[error("bad answer from {addr}: {reason}")]
    Protocol { addr: String, reason: String },
}

/// Where a node's RPC listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcEndpoint {
    /// `host:port` as given (resolved on every call, so a DNS change is followed).
    pub host_port: String,
    /// The request path (`/` unless the URL had one).
    pub path: String,
}

impl RpcEndpoint {
    /// Parses `http://host:port[/path]` or `host:port`.
    pub fn parse(url: &str) -> Result<RpcEndpoint, String> {
        if url.starts_with("https://") {
            return Err(format!(
                "{url}: https is not supported; use the validator's plain http RPC port \
                 (e.g. http://10.0.0.1:8899) over a private network"
            ));
        }
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host_port, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let ok = host_port
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            return Err(format!(
                "{url}: expected http://HOST:PORT (for example http://127.0.0.1:8899)"
            ));
        }
        Ok(RpcEndpoint {
            host_port: host_port.to_string(),
            path: path.to_string(),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.host_port, self.path)
    }
}

/// Sends `calls` as one JSON-RPC batch and returns each call's reply (`result` or
/// `error` object) in the order of `calls`; a reply missing from the batch is `Null`.
pub async fn batch(
    ep: &RpcEndpoint,
    calls: &[(&str, Value)],
    timeout: Duration,
) -> Result<Vec<Value>, ProbeError> {
    let body: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (m, p))| json!({"jsonrpc": "2.0", "id": i, "method": m, "params": p}))
        .collect();
    let body = serde_json::to_vec(&body).expect("JSON serializes");
    let timeout_ms = timeout.as_millis() as u64;
    let answer = tokio::time::timeout(timeout, post(ep, &body))
        .await
        .map_err(|_| ProbeError::Timeout {
            addr: ep.host_port.clone(),
            timeout_ms,
        })??;
    let replies: Vec<Value> = match answer {
        Value::Array(a) => a,
        other => {
            return Err(ProbeError::Protocol {
                addr: ep.host_port.clone(),
                reason: format!("expected a batch reply, got {other}"),
            })
        }
    };
    let mut out = vec![Value::Null; calls.len()];
    for r in replies {
        if let Some(i) = r.get("id").and_then(Value::as_u64) {
            if let Some(slot) = out.get_mut(i as usize) {
                *slot = r;
            }
        }
    }
    Ok(out)
}

async fn post(ep: &RpcEndpoint, body: &[u8]) -> Result<Value, ProbeError> {
    let addr = ep.host_port.clone();
    let unreachable = |e: std::io::Error| ProbeError::Unreachable {
        addr: addr.clone(),
        reason: e.to_string(),
    };
    let protocol = |reason: String| ProbeError::Protocol {
        addr: addr.clone(),
        reason,
    };
    let targets: Vec<SocketAddr> = tokio::net::lookup_host(&ep.host_port)
        .await
        .map_err(unreachable)?
        .collect();
    let target = targets.first().ok_or_else(|| ProbeError::Unreachable {
        addr: addr.clone(),
        reason: "the name resolves to no address".into(),
    })?;
    let mut s = TcpStream::connect(target).await.map_err(unreachable)?;
    let _ = s.set_nodelay(true);
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        ep.path,
        ep.host_port,
        body.len()
    );
    s.write_all(head.as_bytes()).await.map_err(unreachable)?;
    s.write_all(body).await.map_err(unreachable)?;
    let mut resp = Vec::new();
    (&mut s)
        .take(MAX_RESPONSE_BYTES as u64 + 1)
        .read_to_end(&mut resp)
        .await
        .map_err(unreachable)?;
    if resp.len() > MAX_RESPONSE_BYTES {
        return Err(protocol(format!(
            "answer larger than {MAX_RESPONSE_BYTES} bytes"
        )));
    }
    if resp.is_empty() {
        // Accepted then closed without a word: the process is going away.
        return Err(ProbeError::Unreachable {
            addr,
            reason: "connection closed without an answer".into(),
        });
    }
    parse_http_response(&resp).map_err(protocol)
}

/// The JSON body of an HTTP/1.1 200 answer (Content-Length, chunked, or to EOF).
pub fn parse_http_response(resp: &[u8]) -> Result<Value, String> {
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&resp[..split]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!("HTTP status line {status:?}"));
    }
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let raw = &resp[split + 4..];
    let body = if chunked { dechunk(raw)? } else { raw.to_vec() };
    serde_json::from_slice(&body).map_err(|e| format!("body is not JSON: {e}"))
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&raw[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let e = RpcEndpoint::parse("http://127.0.0.1:8899").unwrap();
        assert_eq!(e.host_port, "127.0.0.1:8899");
        assert_eq!(e.path, "/");
        let e = RpcEndpoint::parse("validator-a:8899/rpc").unwrap();
        assert_eq!(e.url(), "http://validator-a:8899/rpc");
        assert!(RpcEndpoint::parse("https://x:1")
            .unwrap_err()
            .contains("https"));
        assert!(RpcEndpoint::parse("http://x").is_err());
        assert!(RpcEndpoint::parse(":8899").is_err());
    }

    #[test]
    fn parses_http_bodies() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n{\"result\":1}\n";
        assert_eq!(parse_http_response(r).unwrap()["result"], 1);
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[1,2,\r\n2\r\n3]\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(r).unwrap(), json!([1, 2, 3]));
        let r = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
        assert!(parse_http_response(r).unwrap_err().contains("503"));
        assert!(parse_http_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[tokio::test]
    async fn refused_and_silent_servers_are_told_apart() {
        // Nothing listens: unreachable.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let ep = RpcEndpoint::parse(&format!("127.0.0.1:{port}")).unwrap();
        let e = batch(&ep, &[("getHealth", json!([]))], Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(e, ProbeError::Unreachable { .. }), "{e:?}");
        // Accepts but never answers (like a SIGSTOPped process): timeout.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ep = RpcEndpoint::parse(&l.local_addr().unwrap().to_string()).unwrap();
        let e = batch(&ep, &[("getHealth", json!([]))], Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(e, ProbeError::Timeout { .. }), "{e:?}");
        drop(l);
    }
}
