//! What a huione validator serves to the outside: Solana-compatible JSON-RPC over HTTP,
//! Prometheus metrics, and the admin socket.
//!
//! The crate knows nothing of consensus. The daemon publishes a plain [`NodeSnapshot`]
//! through a `tokio::sync::watch` channel, owns one [`Metrics`] registry and passes it
//! around, and answers admin requests by implementing [`AdminHandler`].
//!
//! ```text
//! daemon ──watch<Arc<NodeSnapshot>>──► RpcServer  (POST / JSON-RPC, GET /metrics, GET /health)
//!        ──Arc<Metrics>──────────────►  "
//!        ◄──AdminHandler─────────────  AdminServer (<ledger>/admin.rpc, 0600) ◄── AdminClient (CLI)
//! ```
//!
//! Module map: [`snapshot`] (the data), [`jsonrpc`] (envelopes), [`methods`] (Solana's
//! methods as pure functions of a snapshot), [`block`] (getBlock shapes), [`http`] (the
//! server and its limits), [`client`] (the one HTTP/JSON-RPC client every crate uses
//! to call a node), [`metrics`] (registry + text format), [`admin`] (the socket).
//!
//! Invariants: no process-wide state (metrics and config are values); every input size,
//! connection count and wait is bounded; a malformed request is answered or dropped and
//! counted, never a panic.

pub mod admin;
pub mod block;
pub mod client;
pub mod http;
pub mod jsonrpc;
pub mod methods;
pub mod metrics;
pub mod snapshot;

pub use admin::{
    admin_socket_path, AdminClient, AdminClientError, AdminError, AdminHandler, AdminServer,
    AdminServerConfig, AdminServerError, ContactInfo, LockState, MonitorStatus, RestartVerdict,
    RestartWindowInfo, Role, SetIdentityOutcome,
};
pub use http::{answer_body, RpcServer, RpcServerConfig};
pub use metrics::{LockStateKind, Metrics};
pub use snapshot::{
    BlockInfo, ClusterNode, Commitment, EpochLeaderSchedule, EpochSchedule, Freshness, Hash32,
    Health, NodeSnapshot, PerCommitment, Sig64, Slot, VoteAccountInfo, VoteTransaction,
};
