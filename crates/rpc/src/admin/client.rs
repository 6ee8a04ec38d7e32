//! The admin socket's client side, used by the `huione-validator` subcommands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use huione_keys::Keypair;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::{
    AdminError, ContactInfo, MonitorStatus, RestartWindowInfo, SetIdentityOutcome,
    ADMIN_ERROR_CODE, DEFAULT_MAX_MESSAGE_BYTES,
};

/// Every admin method on the wire.
pub(crate) const METHODS: &[&str] = &[
    "exit",
    "contactInfo",
    "setIdentity",
    "addAuthorizedVoter",
    "removeAllAuthorizedVoters",
    "status",
    "restartWindow",
];

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error(
        "cannot connect to the admin socket {path}: {source}. Is huione-validator running \
         with --ledger {ledger}? (the socket is <ledger>/admin.rpc and only its owner can use it)"
    )]
    Connect {
        path: PathBuf,
        ledger: String,
        source: std::io::Error,
    },
    #[error("lost the connection to the admin socket {path}: {source} (did the validator exit?)")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the validator did not answer on {path} within {timeout_ms} ms")]
    Timeout { path: PathBuf, timeout_ms: u64 },
    #[error("the validator on {path} sent an invalid reply: {reason} (are the CLI and validator the same version?)")]
    Protocol { path: PathBuf, reason: String },
    #[error("the validator refused the request: {message} (JSON-RPC error {code})")]
    Rejected { code: i64, message: String },
    /// The handler ran and failed; the typed error from the validator.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// A connection to a running validator's admin socket. Calls are sequential.
pub struct AdminClient {
    path: PathBuf,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    timeout: Duration,
}

impl AdminClient {
    /// Connects to `<ledger_dir>/admin.rpc`.
    pub async fn connect(ledger_dir: &Path) -> Result<AdminClient, AdminClientError> {
        Self::connect_socket(&super::admin_socket_path(ledger_dir)).await
    }

    /// Connects to the socket at `path`.
    pub async fn connect_socket(path: &Path) -> Result<AdminClient, AdminClientError> {
        let stream =
            UnixStream::connect(path)
                .await
                .map_err(|source| AdminClientError::Connect {
                    path: path.to_path_buf(),
                    ledger: path
                        .parent()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "DIR".into()),
                    source,
                })?;
        let (read, writer) = stream.into_split();
        Ok(AdminClient {
            path: path.to_path_buf(),
            reader: BufReader::new(read),
            writer,
            next_id: 1,
            // set-identity may wait for etcd (bounded there); this bounds the CLI anyway.
            timeout: Duration::from_secs(60),
        })
    }

    /// How long to wait for each reply (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks the validator to exit. Returns once it has acknowledged.
    pub async fn exit(&mut self) -> Result<(), AdminClientError> {
        self.call::<Value>("exit", Value::Null).await.map(|_| ())
    }

    pub async fn contact_info(&mut self) -> Result<ContactInfo, AdminClientError> {
        self.call("contactInfo", Value::Null).await
    }

    /// Switches the validator to `keypair`'s identity (takes the tower lock, loads the
    /// tower). With `require_tower`, fails if no tower is stored for it.
    pub async fn set_identity(
        &mut self,
        keypair: &Keypair,
        require_tower: bool,
    ) -> Result<SetIdentityOutcome, AdminClientError> {
        let params =
            json!({ "keypair": keypair.to_bytes().to_vec(), "requireTower": require_tower });
        self.call("setIdentity", params).await
    }

    pub async fn authorized_voter_add(
        &mut self,
        keypair: &Keypair,
    ) -> Result<(), AdminClientError> {
        let params = json!({ "keypair": keypair.to_bytes().to_vec() });
        self.call::<Value>("addAuthorizedVoter", params)
            .await
            .map(|_| ())
    }

    pub async fn authorized_voter_remove_all(&mut self) -> Result<(), AdminClientError> {
        self.call::<Value>("removeAllAuthorizedVoters", Value::Null)
            .await
            .map(|_| ())
    }

    pub async fn status(&mut self) -> Result<MonitorStatus, AdminClientError> {
        self.call("status", Value::Null).await
    }

    /// Restart-window facts for the node's identity, or for `identity`'s leader slots
    /// (a standby about to take over `identity`).
    pub async fn restart_window(
        &mut self,
        identity: Option<huione_keys::Pubkey>,
    ) -> Result<RestartWindowInfo, AdminClientError> {
        let params = match identity {
            Some(id) => json!({ "identity": id.to_string() }),
            None => Value::Null,
        };
        self.call("restartWindow", params).await
    }

    /// Sends one call and reads its reply.
    async fn call<T: DeserializeOwned>(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<T, AdminClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "jsonrpc": "2.0", "id": id, "method": method });
        if !params.is_null() {
            request["params"] = params;
        }
        let mut bytes = serde_json::to_vec(&request).expect("JSON serializes");
        bytes.push(b'\n');
        let timeout = self.timeout;
        let path = self.path.clone();
        let io_err = |source| AdminClientError::Io {
            path: path.clone(),
            source,
        };
        let exchange = async {
            self.writer.write_all(&bytes).await.map_err(io_err)?;
            let mut line = Vec::new();
            let limit = DEFAULT_MAX_MESSAGE_BYTES as u64 * 4;
            (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut line)
                .await
                .map_err(io_err)?;
            Ok::<_, AdminClientError>(line)
        };
        let line = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| AdminClientError::Timeout {
                path: self.path.clone(),
                timeout_ms: timeout.as_millis() as u64,
            })??;
        let protocol = |reason: String| AdminClientError::Protocol {
            path: self.path.clone(),
            reason,
        };
        if line.last() != Some(&b'\n') {
            return Err(if line.is_empty() {
                io_err(std::io::ErrorKind::UnexpectedEof.into())
            } else {
                protocol("reply truncated or too large".into())
            });
        }
        let reply: Value =
            serde_json::from_slice(&line).map_err(|e| protocol(format!("not JSON: {e}")))?;
        if reply.get("id") != Some(&json!(id)) {
            return Err(protocol(format!(
                "reply id {:?}, expected {id}",
                reply.get("id")
            )));
        }
        if let Some(err) = reply.get("error") {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if code == ADMIN_ERROR_CODE {
                if let Some(typed) = err
                    .get("data")
                    .and_then(|d| serde_json::from_value::<AdminError>(d.clone()).ok())
                {
                    return Err(AdminClientError::Admin(typed));
                }
                return Err(AdminClientError::Admin(AdminError::Internal { message }));
            }
            return Err(AdminClientError::Rejected { code, message });
        }
        let result = reply
            .get("result")
            .cloned()
            .ok_or_else(|| protocol("neither result nor error".into()))?;
        serde_json::from_value(result).map_err(|e| protocol(format!("unexpected result: {e}")))
    }
}
