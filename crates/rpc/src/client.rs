//! The one HTTP/JSON-RPC client every crate uses to call a node (the watchtower's probes,
//! the local-cluster launcher, the test harness, the benchmarks, a joining node fetching
//! a snapshot): hyper's HTTP/1.1 client, one connection per call (`Connection: close`),
//! the whole call bounded by one timeout and the answer by a size limit, and every error
//! naming the endpoint. Plain `http://` only: validator RPC ports are not TLS.
//!
//! [`RpcClient`] is async; [`blocking::RpcClient`] runs the same calls to completion for
//! synchronous callers (its own current-thread runtime per call).
//!
//! ```no_run
//! # async fn f() -> Result<(), huione_rpc::client::ClientError> {
//! use huione_rpc::client::{Endpoint, RpcClient};
//! let rpc = RpcClient::new(Endpoint::parse("http://127.0.0.1:8899").unwrap());
//! let slot = rpc.get_slot("finalized").await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// Largest answer read by default (getClusterNodes / getVoteAccounts of a big cluster fit
/// easily; a ledger snapshot needs [`RpcClient::with_max_response_bytes`]).
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Default bound on a whole call: connect, send, receive.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a call produced no result. Every variant names the endpoint (`addr`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Connection refused or reset, or closed without an answer: nothing listens (the
    /// process is gone or going away).
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// No complete answer within the timeout (frozen, overloaded, or cut off).
    #[error("no answer from {addr} within {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u64 },
    /// An HTTP answer other than 200 (e.g. 404 from a node with no snapshot to give,
    /// 503 from an overloaded one); `body` is its start.
    #[error("{addr} answered HTTP {status}: {body}")]
    Status {
        addr: String,
        status: u16,
        body: String,
    },
    /// An answer that is not what was asked for: not HTTP/1.1, not JSON, too large, or
    /// not the expected JSON-RPC shape.
    #[error("bad answer from {addr}: {reason}")]
    Protocol { addr: String, reason: String },
    /// The node answered with a JSON-RPC error (e.g. getHealth's "Node is behind").
    #[error("{addr} answered {method} with error {code}: {message}")]
    Rpc {
        addr: String,
        method: String,
        code: i64,
        message: String,
    },
}

/// Where a node's RPC listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` as given (resolved on every call, so a DNS change is followed).
    pub host_port: String,
    /// The request path (`/` unless the URL had one).
    pub path: String,
}

impl Endpoint {
    /// Parses `http://host:port[/path]` or `host:port`. The error says what form is
    /// expected.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
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
        Ok(Endpoint {
            host_port: host_port.to_string(),
            path: path.to_string(),
        })
    }

    /// The JSON-RPC endpoint at `addr` (path `/`).
    pub fn from_addr(addr: SocketAddr) -> Endpoint {
        Endpoint {
            host_port: addr.to_string(),
            path: "/".to_string(),
        }
    }

    /// `127.0.0.1:port`, path `/`.
    pub fn local(port: u16) -> Endpoint {
        Endpoint::from_addr(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.host_port, self.path)
    }
}

/// A JSON-RPC (and plain HTTP GET) client for one endpoint.
#[derive(Clone, Debug)]
pub struct RpcClient {
    endpoint: Endpoint,
    timeout: Duration,
    max_response_bytes: usize,
}

impl RpcClient {
    /// A client with [`DEFAULT_TIMEOUT`] and [`MAX_RESPONSE_BYTES`].
    pub fn new(endpoint: Endpoint) -> RpcClient {
        RpcClient {
            endpoint,
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: MAX_RESPONSE_BYTES,
        }
    }

    /// Each call (resolve, connect, send, receive) must finish within `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> RpcClient {
        self.timeout = timeout;
        self
    }

    pub fn with_max_response_bytes(mut self, max: usize) -> RpcClient {
        self.max_response_bytes = max;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Calls `method` and returns its `result`; a JSON-RPC error is [`ClientError::Rpc`].
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let reply = self.call_raw(method, params).await?;
        self.result_of(method, reply)
    }

    /// Calls `method` and returns the whole JSON-RPC reply object (`result` or `error`).
    pub async fn call_raw(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        self.post_json(&body).await
    }

    /// Sends `calls` as one JSON-RPC batch and returns each call's reply object (`result`
    /// or `error`) in the order of `calls`; a reply missing from the batch is `Null`.
    pub async fn batch(&self, calls: &[(&str, Value)]) -> Result<Vec<Value>, ClientError> {
        let body: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, (m, p))| json!({"jsonrpc": "2.0", "id": i, "method": m, "params": p}))
            .collect();
        let replies = match self.post_json(&Value::Array(body)).await? {
            Value::Array(a) => a,
            other => return Err(self.protocol(format!("expected a batch reply, got {other}"))),
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

    /// `getSlot` at `commitment` ("processed", "confirmed" or "finalized").
    pub async fn get_slot(&self, commitment: &str) -> Result<u64, ClientError> {
        let v = self
            .call("getSlot", json!([{ "commitment": commitment }]))
            .await?;
        v.as_u64()
            .ok_or_else(|| self.protocol(format!("getSlot returned {v}, not a number")))
    }

    /// `getHealth`: `Ok` when the node says "ok"; an unhealthy node is a
    /// [`ClientError::Rpc`] carrying its reason.
    pub async fn get_health(&self) -> Result<(), ClientError> {
        match self.call("getHealth", json!([])).await? {
            Value::String(s) if s == "ok" => Ok(()),
            other => Err(self.protocol(format!("getHealth returned {other}"))),
        }
    }

    /// `getIdentity`: the node's identity, base58.
    pub async fn get_identity(&self) -> Result<String, ClientError> {
        let v = self.call("getIdentity", json!([])).await?;
        v.get("identity")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| self.protocol(format!("getIdentity returned {v}")))
    }

    /// `getVoteAccounts` at `commitment`: `{"current": [...], "delinquent": [...]}`.
    pub async fn get_vote_accounts(&self, commitment: &str) -> Result<Value, ClientError> {
        self.call("getVoteAccounts", json!([{ "commitment": commitment }]))
            .await
    }

    /// `getClusterNodes`: one object per node in the gossip table.
    pub async fn get_cluster_nodes(&self) -> Result<Vec<Value>, ClientError> {
        match self.call("getClusterNodes", json!([])).await? {
            Value::Array(a) => Ok(a),
            other => Err(self.protocol(format!("getClusterNodes returned {other}"))),
        }
    }

    /// `getBlock` of `slot` (`None` when the node does not hold it: result `null`).
    pub async fn get_block(&self, slot: u64) -> Result<Option<Value>, ClientError> {
        match self.call("getBlock", json!([slot])).await? {
            Value::Null => Ok(None),
            block => Ok(Some(block)),
        }
    }

    /// `GET path` on the endpoint's host (e.g. `/metrics`, `/ledger-snapshot`); the body
    /// of a 200 answer.
    pub async fn get(&self, path: &str) -> Result<Bytes, ClientError> {
        self.request(Method::GET, path, Bytes::new()).await
    }

    /// `GET path` as text (e.g. `/metrics`).
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let body = self.get(path).await?;
        String::from_utf8(body.to_vec()).map_err(|_| self.protocol(format!("{path} is not UTF-8")))
    }

    async fn post_json(&self, body: &Value) -> Result<Value, ClientError> {
        let body = serde_json::to_vec(body).expect("JSON serializes");
        let path = self.endpoint.path.clone();
        let answer = self.request(Method::POST, &path, Bytes::from(body)).await?;
        serde_json::from_slice(&answer).map_err(|e| self.protocol(format!("body is not JSON: {e}")))
    }

    fn result_of(&self, method: &str, mut reply: Value) -> Result<Value, ClientError> {
        if let Some(err) = reply.get("error") {
            return Err(ClientError::Rpc {
                addr: self.endpoint.host_port.clone(),
                method: method.to_string(),
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
                    .to_string(),
            });
        }
        match reply.get_mut("result") {
            Some(r) => Ok(r.take()),
            None => Err(self.protocol(format!("{method}: neither result nor error in {reply}"))),
        }
    }

    /// One request on a fresh connection, bounded by the timeout; the body of a 200 answer.
    async fn request(&self, method: Method, path: &str, body: Bytes) -> Result<Bytes, ClientError> {
        tokio::time::timeout(self.timeout, self.request_unbounded(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout {
                addr: self.endpoint.host_port.clone(),
                timeout_ms: self.timeout.as_millis() as u64,
            })?
    }

    async fn request_unbounded(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Bytes, ClientError> {
        let host_port = &self.endpoint.host_port;
        let unreachable = |reason: String| ClientError::Unreachable {
            addr: host_port.clone(),
            reason,
        };
        let target = tokio::net::lookup_host(host_port)
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| unreachable("the name resolves to no address".into()))?;
        let stream = TcpStream::connect(target)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        // Drives the connection; ends when the answer is read and the sender dropped.
        let driver = tokio::spawn(conn);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, host_port.as_str())
            .header(CONNECTION, "close");
        if !body.is_empty() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let req = builder
            .body(Full::new(body))
            .map_err(|e| self.protocol(format!("cannot build the request for {path}: {e}")))?;
        let result = self.exchange(&mut sender, req).await;
        drop(sender);
        driver.abort();
        result
    }

    async fn exchange(
        &self,
        sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        req: Request<Full<Bytes>>,
    ) -> Result<Bytes, ClientError> {
        let resp = sender.send_request(req).await.map_err(|e| {
            if e.is_parse() || e.is_parse_status() {
                self.protocol(format!("not an HTTP/1.1 answer: {e}"))
            } else {
                // Accepted then closed or reset without a word: the process is going away.
                ClientError::Unreachable {
                    addr: self.endpoint.host_port.clone(),
                    reason: format!("connection closed without an answer ({e})"),
                }
            }
        })?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), self.max_response_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    self.protocol(format!(
                        "answer larger than {} bytes",
                        self.max_response_bytes
                    ))
                } else {
                    ClientError::Unreachable {
                        addr: self.endpoint.host_port.clone(),
                        reason: format!("connection lost while reading the answer ({e})"),
                    }
                }
            })?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(ClientError::Status {
                addr: self.endpoint.host_port.clone(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body[..body.len().min(200)])
                    .trim()
                    .to_string(),
            });
        }
        Ok(body)
    }

    fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            addr: self.endpoint.host_port.clone(),
            reason,
        }
    }
}

/// The same client for synchronous callers (the launcher, the test harness, benches).
pub mod blocking {
    use super::*;

    /// Runs [`super::RpcClient`]'s calls to completion on a current-thread runtime (on a
    /// helper thread when called from inside a tokio runtime).
    #[derive(Clone, Debug)]
    pub struct RpcClient {
        inner: super::RpcClient,
    }

    impl RpcClient {
        pub fn new(endpoint: Endpoint) -> RpcClient {
            RpcClient {
                inner: super::RpcClient::new(endpoint),
            }
        }

        /// The JSON-RPC endpoint at `addr` with `timeout` per call.
        pub fn at(addr: SocketAddr, timeout: Duration) -> RpcClient {
            RpcClient::new(Endpoint::from_addr(addr)).with_timeout(timeout)
        }

        pub fn with_timeout(self, timeout: Duration) -> RpcClient {
            RpcClient {
                inner: self.inner.with_timeout(timeout),
            }
        }

        pub fn with_max_response_bytes(self, max: usize) -> RpcClient {
            RpcClient {
                inner: self.inner.with_max_response_bytes(max),
            }
        }

        pub fn endpoint(&self) -> &Endpoint {
            self.inner.endpoint()
        }

        pub fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
            run(self.inner.call(method, params))
        }

        pub fn call_raw(&self, method: &str, params: Value) -> Result<Value, ClientError> {
            run(self.inner.call_raw(method, params))
        }

        pub fn batch(&self, calls: &[(&str, Value)]) -> Result<Vec<Value>, ClientError> {
            run(self.inner.batch(calls))
        }

        pub fn get_slot(&self, commitment: &str) -> Result<u64, ClientError> {
            run(self.inner.get_slot(commitment))
        }

        pub fn get_health(&self) -> Result<(), ClientError> {
            run(self.inner.get_health())
        }

        pub fn get_identity(&self) -> Result<String, ClientError> {
            run(self.inner.get_identity())
        }

        pub fn get_vote_accounts(&self, commitment: &str) -> Result<Value, ClientError> {
            run(self.inner.get_vote_accounts(commitment))
        }

        pub fn get_cluster_nodes(&self) -> Result<Vec<Value>, ClientError> {
            run(self.inner.get_cluster_nodes())
        }

        pub fn get_block(&self, slot: u64) -> Result<Option<Value>, ClientError> {
            run(self.inner.get_block(slot))
        }

        pub fn get(&self, path: &str) -> Result<Bytes, ClientError> {
            run(self.inner.get(path))
        }

        pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
            run(self.inner.get_text(path))
        }
    }

    fn run<T: Send>(fut: impl std::future::Future<Output = T> + Send) -> T {
        let block_on = |fut| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread tokio runtime starts")
                .block_on(fut)
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // block_on inside a runtime would panic: run it on a thread of its own.
            std::thread::scope(|s| {
                s.spawn(|| block_on(fut))
                    .join()
                    .expect("the RPC call's thread does not panic")
            })
        } else {
            block_on(fut)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:8899").unwrap();
        assert_eq!(e.host_port, "127.0.0.1:8899");
        assert_eq!(e.path, "/");
        let e = Endpoint::parse("validator-a:8899/rpc").unwrap();
        assert_eq!(e.url(), "http://validator-a:8899/rpc");
        assert!(Endpoint::parse("https://x:1")
            .unwrap_err()
            .contains("https"));
        assert!(Endpoint::parse("http://x").is_err());
        assert!(Endpoint::parse(":8899").is_err());
        assert_eq!(Endpoint::local(9).url(), "http://127.0.0.1:9/");
    }

    /// Serves one connection with `response` (raw HTTP), returning the request it read.
    async fn serve_once(response: &'static [u8]) -> (Endpoint, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ep = Endpoint::from_addr(l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Head, then the body by its Content-Length.
            loop {
                let n = s.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            s.write_all(response).await.unwrap();
            s.shutdown().await.unwrap();
            String::from_utf8(req).unwrap()
        });
        (ep, task)
    }

    #[tokio::test]
    async fn results_chunked_answers_and_rpc_errors() {
        let (ep, server) = serve_once(
            b"HTTP/1.1 200 OK\r\ncontent-length: 36\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":42}",
        )
        .await;
        assert_eq!(RpcClient::new(ep).get_slot("finalized").await.unwrap(), 42);
        let req = server.await.unwrap();
        assert!(req.starts_with("POST / HTTP/1.1\r\n"), "{req}");
        assert!(req.contains(r#""method":"getSlot""#), "{req}");
        assert!(req.contains(r#""commitment":"finalized""#), "{req}");

        let (ep, _s) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[{\"id\r\n10\r\n\":1,\"result\":7}]\r\n0\r\n\r\n",
        )
        .await;
        let replies = RpcClient::new(ep)
            .batch(&[("getSlot", json!([])), ("getHealth", json!([]))])
            .await
            .unwrap();
        assert_eq!(replies, vec![Value::Null, json!({"id": 1, "result": 7})]);

        let (ep, _s) = serve_once(
            b"HTTP/1.1 200 OK\r\ncontent-length: 79\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32005,\"message\":\"Node is unhealthy\"}} ",
        )
        .await;
        let addr = ep.host_port.clone();
        match RpcClient::new(ep).get_health().await {
            Err(e @ ClientError::Rpc { .. }) => {
                let text = e.to_string();
                assert!(text.contains(&addr), "{text}");
                assert!(text.contains("getHealth") && text.contains("Node is unhealthy"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn every_error_names_the_endpoint() {
        // Not HTTP 200.
        let (ep, _s) =
            serve_once(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy").await;
        let addr = ep.host_port.clone();
        let e = RpcClient::new(ep).get_text("/metrics").await.unwrap_err();
        assert!(
            matches!(e, ClientError::Status { status: 503, .. }),
            "{e:?}"
        );
        assert!(
            e.to_string().contains(&addr) && e.to_string().contains("busy"),
            "{e}"
        );
        // Larger than allowed.
        let (ep, _s) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789").await;
        let e = RpcClient::new(ep)
            .with_max_response_bytes(4)
            .get("/ledger-snapshot")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("larger than 4 bytes"), "{e}");
        // Nothing listens: unreachable.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = Endpoint::from_addr(l.local_addr().unwrap());
        drop(l);
        let addr = ep.host_port.clone();
        let e = RpcClient::new(ep).get_health().await.unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
        assert!(e.to_string().contains(&addr), "{e}");
        // Accepts but never answers (like a SIGSTOPped process): timeout.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ep = Endpoint::from_addr(l.local_addr().unwrap());
        let addr = ep.host_port.clone();
        let e = RpcClient::new(ep)
            .with_timeout(Duration::from_millis(100))
            .get_health()
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ClientError::Timeout {
                addr,
                timeout_ms: 100
            }
        );
        drop(l);
    }

    #[test]
    fn the_blocking_client_works_inside_and_outside_a_runtime() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (ep, _s) = rt.block_on(serve_once(
            b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"ok\"}    ",
        ));
        blocking::RpcClient::new(ep).get_health().unwrap();
        let (ep, _s) = rt.block_on(serve_once(
            b"HTTP/1.1 200 OK\r\ncontent-length: 36\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":42}",
        ));
        let got = rt.block_on(async { blocking::RpcClient::new(ep).get_slot("processed") });
        assert_eq!(got.unwrap(), 42);
    }
}
