//! Tower storage in etcd over mutual TLS (to be implemented).

use std::path::PathBuf;
use std::time::Duration;

use huione_keys::Pubkey;
use huione_tower::SavedTower;

use crate::{Lease, LockOwner, LockRecord, Revision, StorageError, TowerStorage};

/// How to reach etcd. Mirrors the validator's `--etcd-*` flags.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// `HOST:PORT` (an `https://` prefix is accepted). Several for a multi-member cluster.
    pub endpoints: Vec<String>,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The name the server certificate must carry (`--etcd-domain-name`).
    pub domain_name: String,
    /// Key prefix, default `/huione`.
    pub prefix: String,
    /// TCP connect + TLS handshake bound per endpoint.
    pub connect_timeout: Duration,
    /// Bound for one request to one endpoint.
    pub request_timeout: Duration,
    /// Bound for a whole call, retries across endpoints included.
    pub deadline: Duration,
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
}

impl EtcdConfig {
    /// Defaults: domain `localhost`, prefix `/huione`, connect 1 s, request 1 s,
    /// deadline 3 s, keep-alive every 1 s with a 1 s timeout.
    pub fn new(
        endpoints: Vec<String>,
        ca_file: PathBuf,
        cert_file: PathBuf,
        key_file: PathBuf,
    ) -> Self {
        EtcdConfig {
            endpoints,
            ca_file,
            cert_file,
            key_file,
            domain_name: "localhost".into(),
            prefix: "/huione".into(),
            connect_timeout: Duration::from_millis(1000),
            request_timeout: Duration::from_millis(1000),
            deadline: Duration::from_millis(3000),
            keep_alive_interval: Duration::from_millis(1000),
            keep_alive_timeout: Duration::from_millis(1000),
        }
    }
}

/// Tower storage in etcd.
#[derive(Clone)]
pub struct EtcdTowerStorage {
    config: EtcdConfig,
}

impl EtcdTowerStorage {
    /// Connects and verifies the connection with a real call.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StorageError> {
        Err(StorageError::Config(format!("not implemented yet: {:?}", config.endpoints)))
    }
}

impl TowerStorage for EtcdTowerStorage {
    fn describe(&self) -> String {
        format!("etcd {}", self.config.endpoints.join(","))
    }
    async fn acquire(&self, _identity: &Pubkey, _owner: LockOwner) -> Result<Lease, StorageError> {
        unimplemented!()
    }
    async fn store(&self, _lease: &Lease, _tower: &SavedTower) -> Result<Revision, StorageError> {
        unimplemented!()
    }
    async fn load(&self, _identity: &Pubkey) -> Result<Option<SavedTower>, StorageError> {
        unimplemented!()
    }
    async fn lock_holder(&self, _identity: &Pubkey) -> Result<Option<LockRecord>, StorageError> {
        unimplemented!()
    }
    async fn history(&self, _identity: &Pubkey) -> Result<Vec<LockRecord>, StorageError> {
        unimplemented!()
    }
}
