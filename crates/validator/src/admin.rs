//! The admin socket's handler: forwards each request to the node loop, which owns the
//! core, and waits (bounded) for the answer.

use std::time::Duration;

use huione_keys::{Keypair, Pubkey};
use huione_rpc::{
    AdminError, AdminHandler, ContactInfo, MonitorStatus, RestartWindowInfo, SetIdentityOutcome,
};
use tokio::sync::{mpsc, oneshot};

/// Longest an admin request waits for the node loop (set-identity includes an etcd
/// acquire and load, each bounded by the storage deadline).
const ADMIN_REPLY_TIMEOUT: Duration = Duration::from_secs(20);

pub type Reply<T> = oneshot::Sender<Result<T, AdminError>>;

pub enum AdminRequest {
    Exit(Reply<()>),
    ContactInfo(Reply<ContactInfo>),
    SetIdentity {
        keypair: Keypair,
        require_tower: bool,
        reply: Reply<SetIdentityOutcome>,
    },
    AddVoter(Keypair, Reply<()>),
    RemoveVoters(Reply<()>),
    Status(Reply<MonitorStatus>),
    RestartWindow(Option<Pubkey>, Reply<RestartWindowInfo>),
}

pub struct AdminBridge {
    pub tx: mpsc::Sender<AdminRequest>,
}

impl AdminBridge {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> AdminRequest) -> Result<T, AdminError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| AdminError::Busy {
                reason: "the validator is shutting down".into(),
            })?;
        match tokio::time::timeout(ADMIN_REPLY_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(AdminError::Busy {
                reason: "the validator is shutting down".into(),
            }),
            Err(_) => Err(AdminError::Busy {
                reason: format!("no answer within {} s", ADMIN_REPLY_TIMEOUT.as_secs()),
            }),
        }
    }
}

impl AdminHandler for AdminBridge {
    async fn exit(&self) -> Result<(), AdminError> {
        self.ask(AdminRequest::Exit).await
    }
    async fn contact_info(&self) -> Result<ContactInfo, AdminError> {
        self.ask(AdminRequest::ContactInfo).await
    }
    async fn set_identity(
        &self,
        keypair: Keypair,
        require_tower: bool,
    ) -> Result<SetIdentityOutcome, AdminError> {
        self.ask(|reply| AdminRequest::SetIdentity {
            keypair,
            require_tower,
            reply,
        })
        .await
    }
    async fn authorized_voter_add(&self, keypair: Keypair) -> Result<(), AdminError> {
        self.ask(|r| AdminRequest::AddVoter(keypair, r)).await
    }
    async fn authorized_voter_remove_all(&self) -> Result<(), AdminError> {
        self.ask(AdminRequest::RemoveVoters).await
    }
    async fn status(&self) -> Result<MonitorStatus, AdminError> {
        self.ask(AdminRequest::Status).await
    }
    async fn restart_window(
        &self,
        identity: Option<Pubkey>,
    ) -> Result<RestartWindowInfo, AdminError> {
        self.ask(|r| AdminRequest::RestartWindow(identity, r)).await
    }
}
