//! The admin socket's server side: creates `<ledger>/admin.rpc` owner-only with no window
//! in which another user could connect, and answers newline-delimited JSON-RPC with an
//! [`AdminHandler`].

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::{keypair_from_wire, AdminError, AdminHandler, ADMIN_ERROR_CODE};
use crate::http::reject;
use crate::jsonrpc::{self, RpcError};
use crate::metrics::Metrics;

/// Limits of the admin server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminServerConfig {
    /// Largest request line; a longer one closes the connection.
    pub max_message_bytes: usize,
    /// Connections at once (the CLI uses one at a time).
    pub max_connections: usize,
    /// An idle connection is closed after this long without a request.
    pub idle_timeout: Duration,
}

impl Default for AdminServerConfig {
    fn default() -> Self {
        AdminServerConfig {
            max_message_bytes: super::DEFAULT_MAX_MESSAGE_BYTES,
            max_connections: 8,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Why the admin socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AdminServerError {
    #[error(
        "another huione-validator is already answering on {path}: two validators cannot \
         share a ledger directory; stop the other one or use a different --ledger"
    )]
    AlreadyRunning { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it (move it away)")]
    NotASocket { path: PathBuf },
    #[error("cannot create the admin socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A running admin socket. [`AdminServer::shutdown`] stops it and removes the file.
pub struct AdminServer {
    path: PathBuf,
    /// (device, inode) of our socket file, so shutdown never removes someone else's.
    ident: (u64, u64),
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Creates `<ledger_dir>/admin.rpc` and serves `handler` on it.
    pub async fn start<H: AdminHandler>(
        ledger_dir: &Path,
        handler: Arc<H>,
        metrics: Arc<Metrics>,
        config: AdminServerConfig,
    ) -> Result<AdminServer, AdminServerError> {
        Self::start_at(
            &super::admin_socket_path(ledger_dir),
            handler,
            metrics,
            config,
        )
        .await
    }

    /// Creates the socket at `path` (its directory must exist) and serves `handler`.
    pub async fn start_at<H: AdminHandler>(
        path: &Path,
        handler: Arc<H>,
        metrics: Arc<Metrics>,
        config: AdminServerConfig,
    ) -> Result<AdminServer, AdminServerError> {
        remove_if_stale(path).await?;
        let listener = bind_private(path)?;
        let io_err = |source| AdminServerError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, handler, metrics, config, stop_rx));
        tracing::info!(path = %path.display(), "admin socket listening");
        Ok(AdminServer {
            path: path.to_path_buf(),
            ident: (meta.dev(), meta.ino()),
            stop,
            task,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving and removes the socket file (if it is still ours).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.ident {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Removes a socket file nobody answers on; refuses if someone does or if it is not a
/// socket.
async fn remove_if_stale(path: &Path) -> Result<(), AdminServerError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(AdminServerError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(AdminServerError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match tokio::time::timeout(Duration::from_secs(2), UnixStream::connect(path)).await {
        Ok(Ok(_)) | Err(_) => Err(AdminServerError::AlreadyRunning {
            path: path.to_path_buf(),
        }),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale admin socket (nothing answers on it)");
            std::fs::remove_file(path).or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(AdminServerError::Io {
                        path: path.to_path_buf(),
                        source: e,
                    })
                }
            })
        }
        Ok(Err(source)) => Err(AdminServerError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Binds the socket inside a fresh owner-only directory, makes it 0600, then renames it
/// into place: the socket is never reachable under a path other users can open before its
/// mode is 0600. (A process-wide umask would race with other threads creating files.)
fn bind_private(path: &Path) -> Result<UnixListener, AdminServerError> {
    let io_err = |source| AdminServerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let private = dir.join(format!(".admin-{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(io_err)?;
    let result = (|| {
        let tmp = private.join("s");
        let std_listener = std::os::unix::net::UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        std_listener.set_nonblocking(true)?;
        UnixListener::from_std(std_listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    result.map_err(io_err)
}

async fn accept_loop<H: AdminHandler>(
    listener: UnixListener,
    handler: Arc<H>,
    metrics: Arc<Metrics>,
    config: AdminServerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    let config = Arc::new(config);
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            a = listener.accept() => a,
        };
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !peer_allowed(&stream) {
            reject(&metrics, "admin_peer_uid", &"peer runs as another user");
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            reject(
                &metrics,
                "admin_connection_limit",
                &"too many admin connections",
            );
            continue;
        };
        let (handler, metrics, config) = (handler.clone(), metrics.clone(), config.clone());
        connections.spawn(async move {
            serve_connection(stream, &*handler, &metrics, &config).await;
            drop(permit);
        });
    }
    connections.abort_all();
}

/// Only our own user (or root) may talk to us, even if the file mode were wrong.
fn peer_allowed(stream: &UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(cred) => cred.uid() == me || cred.uid() == 0,
        Err(_) => false,
    }
}

async fn serve_connection<H: AdminHandler>(
    stream: UnixStream,
    handler: &H,
    metrics: &Metrics,
    config: &AdminServerConfig,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = config.max_message_bytes as u64 + 1;
        let read = tokio::time::timeout(
            config.idle_timeout,
            (&mut reader).take(limit).read_until(b'\n', &mut line),
        )
        .await;
        match read {
            Err(_) => return, // idle
            Ok(Err(_)) | Ok(Ok(0)) => return,
            Ok(Ok(_)) => {}
        }
        if line.last() != Some(&b'\n') {
            if line.len() as u64 >= limit {
                reject(
                    metrics,
                    "admin_too_large",
                    &format_args!("request over {} bytes", config.max_message_bytes),
                );
                let e = RpcError::invalid_request("request too large");
                let _ = send(&mut write, &jsonrpc::response_err(Value::Null, &e)).await;
            }
            // Else: EOF in the middle of a line (client went away).
            return;
        }
        let reply = answer_line(&line, handler, metrics).await;
        if let Some(reply) = reply {
            if send(&mut write, &reply).await.is_err() {
                return;
            }
        }
    }
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, v: &Value) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(v).expect("JSON serializes");
    bytes.push(b'\n');
    write.write_all(&bytes).await
}

async fn answer_line<H: AdminHandler>(
    line: &[u8],
    handler: &H,
    metrics: &Metrics,
) -> Option<Value> {
    let call = match jsonrpc::parse_body(line, 1) {
        Ok(jsonrpc::Request::Single(Ok(call))) => call,
        Ok(jsonrpc::Request::Single(Err((id, e)))) => {
            reject(metrics, &format!("admin_{}", e.reason()), &e.message);
            return Some(jsonrpc::response_err(id, &e));
        }
        Ok(jsonrpc::Request::Batch(_)) => {
            let e = RpcError::invalid_request("the admin socket takes one call per line");
            reject(metrics, "admin_invalid_request", &e.message);
            return Some(jsonrpc::response_err(Value::Null, &e));
        }
        Err(e) => {
            reject(metrics, &format!("admin_{}", e.reason()), &e.message);
            return Some(jsonrpc::response_err(Value::Null, &e));
        }
    };
    let id = call.id.clone().unwrap_or(Value::Null);
    let known = super::client::METHODS.contains(&call.method.as_str());
    metrics
        .admin_requests
        .inc(if known { &call.method } else { "unknown" });
    let result = dispatch(&call.method, &call.params, handler).await;
    let reply = match result {
        Ok(v) => jsonrpc::response_ok(id, v),
        Err(Dispatch::Rpc(e)) => {
            reject(metrics, &format!("admin_{}", e.reason()), &e.message);
            jsonrpc::response_err(id, &e)
        }
        Err(Dispatch::Admin(e)) => {
            tracing::warn!(method = %call.method, error = %e, "admin request failed");
            let rpc = RpcError::new(ADMIN_ERROR_CODE, e.to_string())
                .with_data(serde_json::to_value(&e).expect("AdminError serializes"));
            jsonrpc::response_err(id, &rpc)
        }
    };
    call.id.map(|_| reply)
}

enum Dispatch {
    Rpc(RpcError),
    Admin(AdminError),
}

impl From<AdminError> for Dispatch {
    fn from(e: AdminError) -> Self {
        Dispatch::Admin(e)
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).expect("admin results serialize")
}

fn param<'a>(params: &'a Value, key: &str) -> Result<&'a Value, Dispatch> {
    params
        .get(key)
        .ok_or_else(|| Dispatch::Rpc(RpcError::invalid_params(format!("missing \"{key}\""))))
}

fn no_params(params: &Value) -> Result<(), Dispatch> {
    match params {
        Value::Null => Ok(()),
        Value::Array(a) if a.is_empty() => Ok(()),
        Value::Object(o) if o.is_empty() => Ok(()),
        _ => Err(Dispatch::Rpc(RpcError::invalid_params(
            "takes no parameters",
        ))),
    }
}

async fn dispatch<H: AdminHandler>(method: &str, params: &Value, h: &H) -> Result<Value, Dispatch> {
    match method {
        "exit" => {
            no_params(params)?;
            h.exit().await?;
            Ok(Value::Null)
        }
        "contactInfo" => {
            no_params(params)?;
            Ok(to_value(h.contact_info().await?))
        }
        "setIdentity" => {
            let keypair = keypair_from_wire(param(params, "keypair")?)?;
            let require_tower = match params.get("requireTower") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(Dispatch::Rpc(RpcError::invalid_params(
                        "requireTower must be a boolean",
                    )))
                }
            };
            tracing::info!(identity = %keypair.pubkey(), require_tower, "admin: set-identity");
            Ok(to_value(h.set_identity(keypair, require_tower).await?))
        }
        "addAuthorizedVoter" => {
            let keypair = keypair_from_wire(param(params, "keypair")?)?;
            tracing::info!(voter = %keypair.pubkey(), "admin: authorized-voter add");
            h.authorized_voter_add(keypair).await?;
            Ok(json!(null))
        }
        "removeAllAuthorizedVoters" => {
            no_params(params)?;
            tracing::info!("admin: authorized-voter remove-all");
            h.authorized_voter_remove_all().await?;
            Ok(Value::Null)
        }
        "status" => {
            no_params(params)?;
            Ok(to_value(h.status().await?))
        }
        "restartWindow" => {
            // Optional {"identity": base58}: whose leader slots to consider.
            let identity = match params.get("identity") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.parse().map_err(|e| {
                    Dispatch::Rpc(RpcError::invalid_params(format!("identity: {e}")))
                })?),
                Some(_) => {
                    return Err(Dispatch::Rpc(RpcError::invalid_params(
                        "identity must be a base58 string",
                    )))
                }
            };
            Ok(to_value(h.restart_window(identity).await?))
        }
        _ => Err(Dispatch::Rpc(RpcError::method_not_found())),
    }
}
