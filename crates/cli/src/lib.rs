//! Shared plumbing for the operator command-line tools: logging, the tower storage
//! flags (`--tower-storage`, `--tower`, `--etcd-*`) and identity arguments.
//!
//! Flags are parsed into plain data ([`StorageArgs`]) first and resolved into a storage
//! object in a separate step ([`StorageArgs::open`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use huione_keys::{Keypair, Pubkey};
use huione_tower_storage::{AnyTowerStorage, EtcdConfig, EtcdTowerStorage, FileTowerStorage};

/// Sets up `tracing` output on stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_color())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Colour only on a terminal, and never with `NO_COLOR` set.
fn use_color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageKind {
    File,
    Etcd,
}

/// Where towers are stored; the same flags as `huione-validator`.
#[derive(Clone, Debug, clap::Args)]
pub struct StorageArgs {
    /// Where to keep the tower: a local directory or etcd.
    #[arg(long = "tower-storage", value_enum, default_value = "file")]
    pub kind: StorageKind,
    /// Directory for file tower storage (default: the ledger directory, or `.`).
    #[arg(long = "tower", value_name = "DIR")]
    pub tower_dir: Option<PathBuf>,
    /// etcd endpoint HOST:PORT; repeat for each member of a cluster.
    #[arg(long = "etcd-endpoint", value_name = "HOST:PORT")]
    pub etcd_endpoints: Vec<String>,
    /// The CA that signed the etcd server certificate (certs/etcd-ca.pem).
    #[arg(long = "etcd-cacert-file", value_name = "FILE")]
    pub etcd_cacert_file: Option<PathBuf>,
    /// Our client certificate (certs/validator.pem).
    #[arg(long = "etcd-cert-file", value_name = "FILE")]
    pub etcd_cert_file: Option<PathBuf>,
    /// Our client key (certs/validator-key.pem).
    #[arg(long = "etcd-key-file", value_name = "FILE")]
    pub etcd_key_file: Option<PathBuf>,
    /// The name the etcd server certificate must carry.
    #[arg(long = "etcd-domain-name", default_value = "localhost")]
    pub etcd_domain_name: String,
    /// Prefix of every key huione writes in etcd.
    #[arg(long = "etcd-key-prefix", default_value = "/huione")]
    pub etcd_key_prefix: String,
    /// Upper bound for one etcd call, retries across endpoints included.
    #[arg(long = "etcd-timeout-ms", default_value_t = 3000)]
    pub etcd_timeout_ms: u64,
}

impl StorageArgs {
    /// Resolves the flags into a storage, connecting (and verifying) etcd if chosen.
    pub async fn open(&self, default_dir: Option<PathBuf>) -> anyhow::Result<AnyTowerStorage> {
        match self.kind {
            StorageKind::File => {
                let dir = self
                    .tower_dir
                    .clone()
                    .or(default_dir)
                    .unwrap_or_else(|| PathBuf::from("."));
                Ok(AnyTowerStorage::File(
                    FileTowerStorage::new(&dir).with_context(|| {
                        format!("cannot use {} for tower storage", dir.display())
                    })?,
                ))
            }
            StorageKind::Etcd => {
                let config = self.etcd_config()?;
                Ok(AnyTowerStorage::Etcd(
                    EtcdTowerStorage::connect(config).await?,
                ))
            }
        }
    }

    /// The etcd settings, with a clear error for each missing flag.
    pub fn etcd_config(&self) -> anyhow::Result<EtcdConfig> {
        if self.etcd_endpoints.is_empty() {
            bail!("--tower-storage etcd needs at least one --etcd-endpoint HOST:PORT");
        }
        let need = |v: &Option<PathBuf>, flag: &str, example: &str| {
            v.clone().with_context(|| {
                format!("--tower-storage etcd needs {flag} (for example {flag} {example})")
            })
        };
        let mut c = EtcdConfig::new(
            self.etcd_endpoints.clone(),
            need(
                &self.etcd_cacert_file,
                "--etcd-cacert-file",
                "certs/etcd-ca.pem",
            )?,
            need(
                &self.etcd_cert_file,
                "--etcd-cert-file",
                "certs/validator.pem",
            )?,
            need(
                &self.etcd_key_file,
                "--etcd-key-file",
                "certs/validator-key.pem",
            )?,
        );
        c.domain_name = self.etcd_domain_name.clone();
        c.prefix = self.etcd_key_prefix.trim_end_matches('/').to_string();
        c.deadline = Duration::from_millis(self.etcd_timeout_ms);
        Ok(c)
    }
}

/// An identity given as a base58 pubkey or as a path to a keypair file.
pub fn parse_identity(arg: &str) -> anyhow::Result<Pubkey> {
    if let Ok(pk) = arg.parse::<Pubkey>() {
        return Ok(pk);
    }
    if std::path::Path::new(arg).exists() {
        return Ok(Keypair::read_file(arg)?.pubkey());
    }
    bail!("{arg:?} is neither a base58 pubkey nor an existing keypair file")
}

/// Like [`init_logging`] but `warn` by default, for commands whose stdout is the output.
pub fn init_logging_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_color())
        .with_writer(std::io::stderr)
        .try_init();
}
