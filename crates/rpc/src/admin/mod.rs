//! The admin socket: JSON-RPC 2.0 over a Unix socket at `<ledger>/admin.rpc`, one JSON
//! object per line (newline-delimited), owner-only permissions.
//!
//! The daemon implements [`AdminHandler`] and starts an [`AdminServer`]; the
//! `huione-validator` subcommands use [`AdminClient`]. The wire methods are:
//!
//! | method | params | result |
//! |---|---|---|
//! | `exit` | none | null |
//! | `contactInfo` | none | [`ContactInfo`] |
//! | `setIdentity` | `{keypair: [64 bytes], requireTower: bool}` | [`SetIdentityOutcome`] |
//! | `addAuthorizedVoter` | `{keypair: [64 bytes]}` | null |
//! | `removeAllAuthorizedVoters` | none | null |
//! | `status` | none | [`MonitorStatus`] |
//! | `restartWindow` | optional `{identity}` | [`RestartWindowInfo`] |
//!
//! A failed call is a JSON-RPC error with code [`ADMIN_ERROR_CODE`] whose `data` is the
//! serialized [`AdminError`], so the client gets the typed error back.

mod client;
mod server;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use huione_keys::{Keypair, Pubkey};
use serde::{Deserialize, Serialize};

use crate::metrics::LockStateKind;
use crate::snapshot::Slot;

pub use client::{AdminClient, AdminClientError};
pub use server::{AdminServer, AdminServerConfig, AdminServerError};

/// The socket's file name inside the ledger directory.
pub const ADMIN_SOCKET_FILE: &str = "admin.rpc";
/// JSON-RPC error code for an [`AdminError`] (data carries the typed error).
pub const ADMIN_ERROR_CODE: i64 = -32000;
/// Largest request or response line, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// `<ledger>/admin.rpc`
pub fn admin_socket_path(ledger_dir: &Path) -> PathBuf {
    ledger_dir.join(ADMIN_SOCKET_FILE)
}

/// What a node advertises, as `huione-validator contact-info` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactInfo {
    pub identity: Pubkey,
    pub gossip: Option<SocketAddr>,
    pub tvu: Option<SocketAddr>,
    pub tpu: Option<SocketAddr>,
    pub tpu_vote: Option<SocketAddr>,
    pub serve_repair: Option<SocketAddr>,
    pub rpc: Option<SocketAddr>,
    pub shred_version: u16,
    pub version: String,
    /// Unix milliseconds when this process started (gossip uses it to tell two running
    /// instances of one identity apart: the older exits).
    pub started_at_ms: u64,
}

/// What `set-identity` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetIdentityOutcome {
    pub previous_identity: Pubkey,
    pub identity: Pubkey,
    /// True when a stored tower was loaded (and verified); false when the node starts
    /// from an empty tower (only possible without `--require-tower`).
    pub tower_loaded: bool,
    pub tower_root: Option<Slot>,
    /// The fencing token of the lock taken for the new identity.
    pub lock_revision: Option<i64>,
}

/// Whether this node votes with the shared identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Standby,
}

/// The tower lock as `monitor` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    pub state: LockStateKind,
    /// The fencing token while held.
    pub revision: Option<i64>,
    /// Who holds it, when known and not us (e.g. "host-b pid 1234 since ...").
    pub holder: Option<String>,
}

/// One `monitor` frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorStatus {
    pub identity: Pubkey,
    pub vote_account: Pubkey,
    pub version: String,
    /// The newest processed slot.
    pub slot: Slot,
    pub confirmed_slot: Slot,
    pub last_vote: Option<Slot>,
    pub root: Option<Slot>,
    pub role: Role,
    /// e.g. "etcd https://127.0.0.1:2379 (prefix /huione)".
    pub tower_storage: String,
    pub lock: LockState,
    pub votes_withheld: u64,
    pub started_at_ms: u64,
    /// Why the tower rules keep the node from voting now, e.g. "lockout: slot 6 waits
    /// for slot 8" (None while it votes).
    #[serde(default)]
    pub vote_wait: Option<String>,
}

/// What `wait-for-restart-window` needs to decide.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestartWindowInfo {
    pub identity: Pubkey,
    pub current_slot: Slot,
    /// This identity's leader slots from `current_slot` on (current and next epoch),
    /// ascending.
    pub upcoming_leader_slots: Vec<Slot>,
    pub ms_per_slot: u64,
    /// Whether the node has caught up with the cluster.
    pub caught_up: bool,
    pub slots_behind: Option<u64>,
    /// Percentage (0–100) of activated stake that is delinquent.
    pub delinquent_stake_percent: f64,
}

/// The decision of `wait-for-restart-window`.
#[derive(Clone, Debug, PartialEq)]
pub enum RestartVerdict {
    Ready,
    /// Not yet; the reason says why (shown to the operator while waiting).
    Wait(String),
}

impl RestartWindowInfo {
    /// The next leader slot at or after `current_slot`.
    pub fn next_leader_slot(&self) -> Option<Slot> {
        self.upcoming_leader_slots
            .iter()
            .copied()
            .find(|s| *s >= self.current_slot)
    }

    /// Milliseconds until the next leader slot, at `ms_per_slot`.
    pub fn ms_until_next_leader_slot(&self) -> Option<u64> {
        self.next_leader_slot()
            .map(|s| (s - self.current_slot).saturating_mul(self.ms_per_slot))
    }

    /// Ready when the node is caught up, delinquent stake is at most
    /// `max_delinquent_percent`, and no leader slot comes within `min_idle_ms`.
    pub fn verdict(&self, min_idle_ms: u64, max_delinquent_percent: f64) -> RestartVerdict {
        if !self.caught_up {
            let behind = self
                .slots_behind
                .map(|n| format!("{n} slots behind"))
                .unwrap_or_else(|| "not caught up".into());
            return RestartVerdict::Wait(format!("node is {behind}"));
        }
        if self.delinquent_stake_percent > max_delinquent_percent {
            return RestartVerdict::Wait(format!(
                "{:.1}% of stake is delinquent (limit {max_delinquent_percent:.1}%)",
                self.delinquent_stake_percent
            ));
        }
        if let (Some(slot), Some(ms)) = (self.next_leader_slot(), self.ms_until_next_leader_slot())
        {
            if ms < min_idle_ms {
                return RestartVerdict::Wait(format!(
                    "leader slot {slot} in {ms} ms (need {min_idle_ms} ms idle)"
                ));
            }
        }
        RestartVerdict::Ready
    }
}

/// Errors an admin request can end with, sent back to the client typed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AdminError {
    #[error("invalid keypair: {reason}")]
    InvalidKeypair { reason: String },
    #[error(
        "no stored tower for {identity} in {storage}, and --require-tower was given: \
         check that the primary stored its tower there, or retry without --require-tower"
    )]
    TowerRequired { identity: Pubkey, storage: String },
    #[error("the stored tower for {identity} failed verification: {reason}")]
    TowerInvalid { identity: Pubkey, reason: String },
    #[error("tower storage is unavailable: {reason}; nothing was changed, retry when it answers")]
    StorageUnavailable { reason: String },
    #[error("could not take the tower lock for {identity}: {reason}")]
    LockNotAcquired { identity: Pubkey, reason: String },
    #[error("the validator is busy ({reason}); retry")]
    Busy { reason: String },
    #[error("not supported by this validator: {what}")]
    Unsupported { what: String },
    #[error("{message}")]
    Internal { message: String },
}

/// What the daemon does for admin requests. Implementations must be cheap to call
/// concurrently (the server runs one task per connection).
///
/// `exit` must only start the shutdown and return, so the reply reaches the client
/// before the process ends.
pub trait AdminHandler: Send + Sync + 'static {
    fn exit(&self) -> impl Future<Output = Result<(), AdminError>> + Send;
    fn contact_info(&self) -> impl Future<Output = Result<ContactInfo, AdminError>> + Send;
    fn set_identity(
        &self,
        keypair: Keypair,
        require_tower: bool,
    ) -> impl Future<Output = Result<SetIdentityOutcome, AdminError>> + Send;
    fn authorized_voter_add(
        &self,
        keypair: Keypair,
    ) -> impl Future<Output = Result<(), AdminError>> + Send;
    fn authorized_voter_remove_all(&self) -> impl Future<Output = Result<(), AdminError>> + Send;
    fn status(&self) -> impl Future<Output = Result<MonitorStatus, AdminError>> + Send;
    /// `identity`: whose leader slots count (default: the node's own identity).
    fn restart_window(
        &self,
        identity: Option<Pubkey>,
    ) -> impl Future<Output = Result<RestartWindowInfo, AdminError>> + Send;
}

/// The keypair as sent on the wire: the 64 bytes of a keypair file.
pub(crate) fn keypair_from_wire(v: &serde_json::Value) -> Result<Keypair, AdminError> {
    let bad = |reason: String| AdminError::InvalidKeypair { reason };
    let arr = v
        .as_array()
        .ok_or_else(|| bad("expected an array of 64 bytes".into()))?;
    if arr.len() != 64 {
        return Err(bad(format!("{} entries, expected 64", arr.len())));
    }
    let mut bytes = [0u8; 64];
    for (i, n) in arr.iter().enumerate() {
        bytes[i] = n
            .as_u64()
            .filter(|b| *b <= 255)
            .ok_or_else(|| bad(format!("entry {i} is not a byte")))? as u8;
    }
    Keypair::from_bytes(&bytes).map_err(|e| bad(format!("public half does not match: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(current: Slot, leader: Vec<Slot>) -> RestartWindowInfo {
        RestartWindowInfo {
            identity: Pubkey::from_seed_byte(1),
            current_slot: current,
            upcoming_leader_slots: leader,
            ms_per_slot: 400,
            caught_up: true,
            slots_behind: Some(0),
            delinquent_stake_percent: 1.0,
        }
    }

    #[test]
    fn restart_window_verdicts() {
        let i = info(100, vec![90, 110]);
        assert_eq!(i.next_leader_slot(), Some(110));
        assert_eq!(i.ms_until_next_leader_slot(), Some(4000));
        assert_eq!(i.verdict(3000, 5.0), RestartVerdict::Ready);
        assert!(matches!(i.verdict(5000, 5.0), RestartVerdict::Wait(_)));
        assert!(matches!(i.verdict(0, 0.5), RestartVerdict::Wait(_)));
        let mut behind = info(100, vec![]);
        behind.caught_up = false;
        assert!(
            matches!(behind.verdict(0, 100.0), RestartVerdict::Wait(m) if m.contains("behind"))
        );
        assert_eq!(
            info(100, vec![]).verdict(u64::MAX, 5.0),
            RestartVerdict::Ready
        );
    }

    #[test]
    fn admin_errors_round_trip() {
        let e = AdminError::TowerRequired {
            identity: Pubkey::from_seed_byte(3),
            storage: "etcd x".into(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "tower_required");
        assert_eq!(serde_json::from_value::<AdminError>(v).unwrap(), e);
    }
}
