//! The HTTP server: JSON-RPC at `POST /`, Prometheus metrics at `GET /metrics` and
//! Solana's plain `GET /health`, all on one port. Every limit (connections, header bytes,
//! body bytes, batch length, time per request, time to send headers) is enforced here;
//! every rejection is counted in `huione_rpc_rejected_total{reason}` and logged once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::jsonrpc::{self, Request as RpcRequest, RpcError};
use crate::methods::{self, METHODS};
use crate::metrics::Metrics;
use crate::snapshot::{Health, NodeSnapshot};

/// Limits of the HTTP server. The defaults suit a validator's public RPC port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcServerConfig {
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Largest request head (request line + headers); larger ones get 431.
    pub max_header_bytes: usize,
    /// Calls in one batch; more is one -32600 error.
    pub max_batch_len: usize,
    /// Time to read a request's body and answer it; slower gets 408.
    pub request_timeout: Duration,
    /// Time a client has to send a complete request head (also closes idle
    /// keep-alive connections).
    pub header_read_timeout: Duration,
    /// Open connections at once; more are answered 503 and closed.
    pub max_connections: usize,
}

impl Default for RpcServerConfig {
    fn default() -> Self {
        RpcServerConfig {
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            max_batch_len: 100,
            request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 256,
        }
    }
}

/// Counts a rejected request and logs it once. Rejections are logged at debug level so a
/// flood of garbage cannot flood the log; the counter always moves.
pub fn reject(metrics: &Metrics, reason: &str, detail: &dyn std::fmt::Display) {
    metrics.rpc_rejected.inc(reason);
    tracing::debug!(target: "huione_rpc::reject", reason, %detail, "request rejected");
}

/// Answers a JSON-RPC request body. `None` when the body held only notifications (no
/// response is due). No I/O: this is what the HTTP layer calls and what the fuzz tests hit.
pub fn answer_body(
    body: &[u8],
    snap: &NodeSnapshot,
    metrics: &Metrics,
    max_batch_len: usize,
) -> Option<Value> {
    let request = match jsonrpc::parse_body(body, max_batch_len) {
        Ok(r) => r,
        Err(e) => {
            reject(metrics, e.reason(), &e.message);
            return Some(jsonrpc::response_err(Value::Null, &e));
        }
    };
    match request {
        RpcRequest::Single(item) => answer_item(item, snap, metrics),
        RpcRequest::Batch(items) => {
            let out: Vec<Value> = items
                .into_iter()
                .filter_map(|item| answer_item(item, snap, metrics))
                .collect();
            (!out.is_empty()).then_some(Value::Array(out))
        }
    }
}

fn answer_item(
    item: Result<jsonrpc::Call, (Value, RpcError)>,
    snap: &NodeSnapshot,
    metrics: &Metrics,
) -> Option<Value> {
    let call = match item {
        Ok(call) => call,
        Err((id, e)) => {
            reject(metrics, e.reason(), &e.message);
            return Some(jsonrpc::response_err(id, &e));
        }
    };
    let label = if METHODS.contains(&call.method.as_str()) {
        call.method.as_str()
    } else {
        "unknown"
    };
    metrics.rpc_requests.inc(label);
    let result = methods::call(&call.method, &call.params, snap);
    if let Err(e) = &result {
        if (-32700..=-32600).contains(&e.code) {
            let method: String = call.method.chars().take(64).collect();
            reject(
                metrics,
                e.reason(),
                &format_args!("{method}: {}", e.message),
            );
        }
    }
    // A notification gets no response, whatever happened.
    let id = call.id?;
    Some(match result {
        Ok(v) => jsonrpc::response_ok(id, v),
        Err(e) => jsonrpc::response_err(id, &e),
    })
}

struct Shared {
    config: RpcServerConfig,
    snapshots: watch::Receiver<Arc<NodeSnapshot>>,
    metrics: Arc<Metrics>,
}

/// A running RPC server. Dropping it does not stop it; call [`RpcServer::shutdown`].
pub struct RpcServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RpcServer {
    /// Binds `addr` (port 0 picks a free port) and starts serving.
    pub async fn bind(
        addr: SocketAddr,
        config: RpcServerConfig,
        snapshots: watch::Receiver<Arc<NodeSnapshot>>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<RpcServer> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen for RPC on {addr}: {e} (is --rpc-port already in use?)"),
            )
        })?;
        Self::serve(listener, config, snapshots, metrics)
    }

    /// Serves on an already bound listener.
    pub fn serve(
        listener: TcpListener,
        config: RpcServerConfig,
        snapshots: watch::Receiver<Arc<NodeSnapshot>>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<RpcServer> {
        let local_addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            snapshots,
            metrics,
        });
        let task = tokio::spawn(accept_loop(listener, shared, stop_rx));
        tracing::info!(%local_addr, "JSON-RPC and /metrics listening");
        Ok(RpcServer {
            local_addr,
            stop,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets open connections finish their current request (up to the
    /// request timeout), and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            a = listener.accept() => a,
        };
        // Reap finished connection tasks so the set stays bounded.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "RPC accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            reject(&shared.metrics, "connection_limit", &peer);
            connections.spawn(refuse(stream));
            continue;
        };
        let shared = shared.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            serve_connection(stream, peer, shared, stop).await;
            drop(permit);
        });
    }
    let grace = shared.config.request_timeout + Duration::from_secs(1);
    let _ = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

/// Answers 503 to a connection over the limit, without reading its request.
async fn refuse(mut stream: TcpStream) {
    let reply =
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(reply)).await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.header_read_timeout)
        .max_header_size(shared.config.max_header_bytes)
        .max_buf_size(shared.config.max_header_bytes.max(8192) * 2)
        .keep_alive(true);
    let svc_shared = shared.clone();
    let service = hyper::service::service_fn(move |req| {
        let shared = svc_shared.clone();
        async move { Ok::<_, Infallible>(handle(req, &shared).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(shared.config.request_timeout, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        let reason = if e.is_parse_too_large() {
            Some("header_too_large")
        } else if e.is_parse() {
            Some("bad_http")
        } else if e.is_timeout() {
            Some("header_timeout")
        } else {
            None
        };
        match reason {
            Some(r) => reject(&shared.metrics, r, &format_args!("{peer}: {e}")),
            None => tracing::debug!(%peer, error = %e, "RPC connection ended with an error"),
        }
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn close_after(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

async fn handle(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let timeout = shared.config.request_timeout;
    match tokio::time::timeout(timeout, route(req, shared)).await {
        Ok(r) => r,
        Err(_) => {
            reject(
                &shared.metrics,
                "timeout",
                &format_args!("no complete request within {timeout:?}"),
            );
            close_after(respond(
                StatusCode::REQUEST_TIMEOUT,
                "text/plain",
                "request timed out\n",
            ))
        }
    }
}

async fn route(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::POST, "/") => rpc(req, shared).await,
        (&Method::GET, "/metrics") => respond(
            StatusCode::OK,
            crate::metrics::CONTENT_TYPE,
            shared.metrics.render(),
        ),
        (&Method::GET, "/ledger-snapshot") => {
            let snap = shared.snapshots.borrow().ledger_snapshot.clone();
            match snap {
                Some(bytes) => respond(
                    StatusCode::OK,
                    "application/octet-stream",
                    bytes.as_slice().to_vec(),
                ),
                None => respond(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "no ledger snapshot yet: the node has not rooted a slot\n",
                ),
            }
        }
        (&Method::GET, "/health") => {
            let snap = shared.snapshots.borrow().clone();
            let body = match snap.health {
                Health::Ok => "ok",
                Health::Behind { .. } => "behind",
                Health::Unknown => "unknown",
            };
            respond(StatusCode::OK, "text/plain", body)
        }
        (_, "/") => {
            reject(&shared.metrics, "method_not_allowed", req.method());
            let mut r = respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "Used HTTP Method is not allowed. POST is required\n",
            );
            r.headers_mut()
                .insert(hyper::header::ALLOW, HeaderValue::from_static("POST"));
            r
        }
        _ => {
            let shown: String = path.chars().take(64).collect();
            reject(&shared.metrics, "not_found", &shown);
            respond(StatusCode::NOT_FOUND, "text/plain", "not found\n")
        }
    }
}

async fn rpc(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let max = shared.config.max_body_bytes;
    let too_large = |metrics: &Metrics, size: &dyn std::fmt::Display| {
        reject(
            metrics,
            "body_too_large",
            &format_args!("{size} bytes > limit {max}"),
        );
        close_after(respond(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text/plain",
            format!("request body larger than {max} bytes\n"),
        ))
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|l| *l > max as u64) {
        return too_large(&shared.metrics, &len);
    }
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.is::<http_body_util::LengthLimitError>() {
                return too_large(&shared.metrics, &"more than the");
            }
            reject(&shared.metrics, "bad_body", &e);
            return close_after(respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "could not read the request body\n",
            ));
        }
    };
    let snap = shared.snapshots.borrow().clone();
    match answer_body(&body, &snap, &shared.metrics, shared.config.max_batch_len) {
        Some(v) => respond(
            StatusCode::OK,
            "application/json; charset=utf-8",
            serde_json::to_vec(&v).expect("a JSON value serializes"),
        ),
        None => respond(StatusCode::NO_CONTENT, "application/json", Bytes::new()),
    }
}
