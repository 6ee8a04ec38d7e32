//! `huione-local-cluster`'s flags as plain data ([`LocalClusterArgs`]), and their
//! validation into a [`ClusterConfig`] with errors that say what to change. Nothing here
//! starts a process; the only I/O is looking at the cluster dir and for the validator
//! binary.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use huione_core::LEADER_SLOTS;

use crate::genesis::{DEFAULT_SLOTS_PER_EPOCH, DEFAULT_SLOT_MS, DEFAULT_START_IN_MS};
use crate::ports::{PORTS_PER_NODE, RPC_PORT_OFFSET};

/// Most staked validators the launcher starts (each is a process on this machine).
pub const MAX_VALIDATORS: usize = 32;
/// etcd member counts the launcher supports.
pub const ETCD_MEMBER_CHOICES: [usize; 2] = [1, 3];
/// Name of the validator binary looked for next to the launcher and on PATH.
pub const VALIDATOR_BIN_NAME: &str = "huione-validator";
/// Longest Unix socket path (`sun_path` is 108 bytes including the NUL).
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// Starts a whole huione cluster on this machine: keypairs, genesis, optionally etcd over
/// mutual TLS and a primary/secondary failover pair, N validators on 127.0.0.1. Writes
/// DIR/cluster.json, shows each node's slots once per second, and stops everything on
/// Ctrl-C.
#[derive(clap::Parser, Clone, Debug, PartialEq, Eq)]
#[command(name = "huione-local-cluster", version)]
pub struct LocalClusterArgs {
    /// Staked validators to start (with --etcd the last one is the "primary", whose tower
    /// is in etcd; --failover-pair adds an unstaked secondary on top).
    #[arg(long, value_name = "N")]
    pub validators: usize,
    /// Directory for keypairs, genesis, certificates, etcd data, ledgers, logs and
    /// cluster.json. Must be empty or not exist.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Slot length in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_SLOT_MS)]
    pub slot_ms: u64,
    /// Epoch length in slots (a multiple of 4).
    #[arg(long, value_name = "SLOTS", default_value_t = DEFAULT_SLOTS_PER_EPOCH)]
    pub slots_per_epoch: u64,
    /// Slot 0 starts this long after the genesis is written (just before the nodes start).
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_START_IN_MS)]
    pub start_in_ms: u64,
    /// Start etcd over mutual TLS (certificates in DIR/certs, data in DIR/etcd); the
    /// primary (and secondary) keep their tower in it.
    #[arg(long)]
    pub etcd: bool,
    /// etcd members (1 or 3; needs --etcd).
    #[arg(long, value_name = "1|3")]
    pub etcd_members: Option<usize>,
    /// Add a hot-standby secondary for the primary: its own identity
    /// (secondary-validator-keypair.json), no stake, --no-check-vote-account and
    /// --authorized-voter <primary identity>. Needs --etcd.
    #[arg(long)]
    pub failover_pair: bool,
    /// Use ports from P on: node i gets gossip P+10i and RPC P+10i+9 (default: free ports
    /// in 20000..30000).
    #[arg(long, value_name = "P")]
    pub base_port: Option<u16>,
    /// The validator binary (default: huione-validator next to this program, else PATH).
    #[arg(long, value_name = "PATH")]
    pub validator_bin: Option<PathBuf>,
    /// An extra argument for every validator (repeat for more), e.g.
    /// --validator-arg=--some-flag.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub validator_arg: Vec<String>,
    /// Stop the cluster after this many seconds of running (default: until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub run_for_secs: Option<u64>,
    /// Give up if the nodes do not all answer RPC within this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub start_timeout_secs: u64,
    /// On stop, SIGKILL a node that has not exited this many seconds after SIGTERM.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub stop_timeout_secs: u64,
}

/// How node ports are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortChoice {
    /// Consecutive blocks from this port.
    Base(u16),
    /// Free blocks found at start-up.
    Auto,
}

/// A validated launcher configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub validators: usize,
    /// Absolute.
    pub dir: PathBuf,
    pub slot_ms: u64,
    pub slots_per_epoch: u64,
    pub start_in_ms: u64,
    /// etcd member count, when etcd is used.
    pub etcd_members: Option<usize>,
    pub failover_pair: bool,
    pub ports: PortChoice,
    pub validator_bin: PathBuf,
    pub validator_args: Vec<String>,
    pub run_for: Option<Duration>,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
}

impl ClusterConfig {
    /// Nodes the launcher starts: the staked validators plus the secondary.
    pub fn node_count(&self) -> usize {
        self.validators + usize::from(self.failover_pair)
    }
}

/// A flag combination or environment the launcher cannot work with.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--validators must be between 1 and {MAX_VALIDATORS} (got {0})")]
    ValidatorCount(usize),
    #[error("--slot-ms must be at least 1")]
    ZeroSlot,
    #[error("--slots-per-epoch ({0}) must be a positive multiple of {LEADER_SLOTS}")]
    EpochLength(u64),
    #[error("--etcd-members needs --etcd")]
    MembersWithoutEtcd,
    #[error("--etcd-members must be 1 or 3 (got {0})")]
    EtcdMembers(usize),
    #[error(
        "--failover-pair needs --etcd: the primary and the secondary share the tower (and its \
         lock) through etcd"
    )]
    PairWithoutEtcd,
    #[error(
        "--base-port {base} leaves no room for {nodes} nodes ({PORTS_PER_NODE} ports each, up \
         to port {last}); use a base port of at most {max}"
    )]
    BasePortRange {
        base: u16,
        nodes: usize,
        last: u64,
        max: u64,
    },
    #[error(
        "{0} is not empty (an earlier cluster?); pass a new --dir or remove it. The launcher \
         never reuses keys or ledgers of another run"
    )]
    DirNotEmpty(PathBuf),
    #[error("{0} exists and is not a directory; pass a directory for --dir")]
    DirIsFile(PathBuf),
    #[error("cannot use {path} as --dir: {reason}")]
    DirUnusable { path: PathBuf, reason: String },
    #[error(
        "the admin socket path {0} is longer than {MAX_SOCKET_PATH_BYTES} bytes (the Unix \
         socket limit); pass a shorter --dir"
    )]
    SocketPathTooLong(PathBuf),
    #[error("--validator-bin {0} is not an executable file")]
    BadValidatorBin(PathBuf),
    #[error(
        "{VALIDATOR_BIN_NAME} was found neither next to this program ({0}) nor on PATH; build \
         it (cargo build -p huione-validator) or pass --validator-bin"
    )]
    NoValidatorBin(String),
}

/// Where to look for the validator binary when `--validator-bin` is not given.
#[derive(Clone, Debug, Default)]
pub struct BinSearch {
    /// Directory of the running launcher.
    pub exe_dir: Option<PathBuf>,
    /// The PATH variable.
    pub path: Option<OsString>,
}

impl BinSearch {
    /// The launcher's own directory and PATH.
    pub fn from_env() -> Self {
        BinSearch {
            exe_dir: std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf)),
            path: std::env::var_os("PATH"),
        }
    }

    /// `huione-validator` next to the launcher, else the first on PATH.
    pub fn find(&self) -> Result<PathBuf, ConfigError> {
        let beside = self.exe_dir.as_ref().map(|d| d.join(VALIDATOR_BIN_NAME));
        if let Some(p) = beside.as_ref().filter(|p| is_executable(p)) {
            return Ok(p.clone());
        }
        let on_path = self.path.as_ref().and_then(|paths| {
            std::env::split_paths(paths)
                .map(|d| d.join(VALIDATOR_BIN_NAME))
                .find(|p| is_executable(p))
        });
        on_path.ok_or_else(|| {
            ConfigError::NoValidatorBin(
                beside.map_or_else(|| "unknown".to_string(), |p| p.display().to_string()),
            )
        })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

impl LocalClusterArgs {
    /// Checks the flags (cheap checks first), the cluster dir (must be empty or absent) and
    /// finds the validator binary.
    pub fn resolve(&self, search: &BinSearch) -> Result<ClusterConfig, ConfigError> {
        if !(1..=MAX_VALIDATORS).contains(&self.validators) {
            return Err(ConfigError::ValidatorCount(self.validators));
        }
        if self.slot_ms == 0 {
            return Err(ConfigError::ZeroSlot);
        }
        if self.slots_per_epoch == 0 || !self.slots_per_epoch.is_multiple_of(LEADER_SLOTS) {
            return Err(ConfigError::EpochLength(self.slots_per_epoch));
        }
        let etcd_members = match (self.etcd, self.etcd_members) {
            (false, Some(_)) => return Err(ConfigError::MembersWithoutEtcd),
            (false, None) => None,
            (true, None) => Some(1),
            (true, Some(n)) if ETCD_MEMBER_CHOICES.contains(&n) => Some(n),
            (true, Some(n)) => return Err(ConfigError::EtcdMembers(n)),
        };
        if self.failover_pair && !self.etcd {
            return Err(ConfigError::PairWithoutEtcd);
        }
        let nodes = self.validators + usize::from(self.failover_pair);
        let ports = match self.base_port {
            None => PortChoice::Auto,
            Some(base) => {
                let last = u64::from(base) + (nodes as u64) * u64::from(PORTS_PER_NODE) - 1;
                if base == 0 || last > u64::from(u16::MAX) {
                    let max = u64::from(u16::MAX) + 1 - (nodes as u64) * u64::from(PORTS_PER_NODE);
                    return Err(ConfigError::BasePortRange {
                        base,
                        nodes,
                        last,
                        max,
                    });
                }
                PortChoice::Base(base)
            }
        };
        const { assert!(RPC_PORT_OFFSET < PORTS_PER_NODE) };
        let dir = check_dir(&self.dir)?;
        let longest_socket =
            crate::plan::node_names(self.validators, self.etcd, self.failover_pair)
                .into_iter()
                .map(|(name, _)| crate::plan::admin_socket_path(&dir, &name))
                .max_by_key(|p| p.as_os_str().len())
                .expect("at least one node");
        if longest_socket.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
            return Err(ConfigError::SocketPathTooLong(longest_socket));
        }
        let validator_bin = match &self.validator_bin {
            Some(p) if is_executable(p) => std::path::absolute(p).unwrap_or_else(|_| p.clone()),
            Some(p) => return Err(ConfigError::BadValidatorBin(p.clone())),
            None => search.find()?,
        };
        Ok(ClusterConfig {
            validators: self.validators,
            dir,
            slot_ms: self.slot_ms,
            slots_per_epoch: self.slots_per_epoch,
            start_in_ms: self.start_in_ms,
            etcd_members,
            failover_pair: self.failover_pair,
            ports,
            validator_bin,
            validator_args: self.validator_arg.clone(),
            run_for: self.run_for_secs.map(Duration::from_secs),
            start_timeout: Duration::from_secs(self.start_timeout_secs),
            stop_timeout: Duration::from_secs(self.stop_timeout_secs),
        })
    }
}

/// The absolute cluster dir, which must be absent or an empty directory.
fn check_dir(dir: &Path) -> Result<PathBuf, ConfigError> {
    let abs = std::path::absolute(dir).map_err(|e| ConfigError::DirUnusable {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    match std::fs::read_dir(&abs) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ConfigError::DirNotEmpty(abs));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) if abs.exists() && !abs.is_dir() => return Err(ConfigError::DirIsFile(abs)),
        Err(e) => {
            return Err(ConfigError::DirUnusable {
                path: abs,
                reason: e.to_string(),
            })
        }
    }
    Ok(abs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn fake_bin(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(VALIDATOR_BIN_NAME);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn resolve(args: &[&str], search: &BinSearch) -> Result<ClusterConfig, ConfigError> {
        let mut all = vec!["huione-local-cluster"];
        all.extend_from_slice(args);
        LocalClusterArgs::try_parse_from(all)
            .unwrap()
            .resolve(search)
    }

    #[test]
    fn defaults_and_validator_bin_search() {
        let tmp = tempfile::tempdir().unwrap();
        let bin_dir = tmp.path().join("bin");
        std::fs::create_dir(&bin_dir).unwrap();
        let bin = fake_bin(&bin_dir);
        let dir = tmp.path().join("c");
        let d = dir.to_str().unwrap();
        let beside = BinSearch {
            exe_dir: Some(bin_dir.clone()),
            path: None,
        };
        let cfg = resolve(&["--validators", "3", "--dir", d], &beside).unwrap();
        assert_eq!(cfg.validator_bin, bin);
        assert_eq!(cfg.dir, dir);
        assert_eq!(
            (cfg.slot_ms, cfg.slots_per_epoch, cfg.start_in_ms),
            (400, 432, 3000)
        );
        assert_eq!((cfg.etcd_members, cfg.failover_pair), (None, false));
        assert_eq!((cfg.ports, cfg.node_count()), (PortChoice::Auto, 3));
        let on_path = BinSearch {
            exe_dir: Some(tmp.path().to_path_buf()),
            path: Some(std::env::join_paths([Path::new("/nonexistent"), &bin_dir]).unwrap()),
        };
        assert_eq!(
            resolve(&["--validators", "1", "--dir", d], &on_path)
                .unwrap()
                .validator_bin,
            bin
        );
        let nowhere = BinSearch::default();
        let err = resolve(&["--validators", "1", "--dir", d], &nowhere).unwrap_err();
        assert!(err.to_string().contains("--validator-bin"), "{err}");
        let cfg = resolve(
            &[
                "--validators",
                "2",
                "--dir",
                d,
                "--etcd",
                "--failover-pair",
                "--etcd-members",
                "3",
                "--base-port",
                "40000",
                "--validator-bin",
                bin.to_str().unwrap(),
                "--validator-arg=--foo",
                "--run-for-secs",
                "5",
            ],
            &nowhere,
        )
        .unwrap();
        assert_eq!(
            (cfg.etcd_members, cfg.failover_pair, cfg.node_count()),
            (Some(3), true, 3)
        );
        assert_eq!(cfg.ports, PortChoice::Base(40000));
        assert_eq!(cfg.validator_args, vec!["--foo".to_string()]);
        assert_eq!(cfg.run_for, Some(Duration::from_secs(5)));
    }

    #[test]
    fn bad_combinations_are_refused_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = fake_bin(tmp.path());
        let search = BinSearch {
            exe_dir: Some(tmp.path().to_path_buf()),
            path: None,
        };
        let d = tmp.path().join("c");
        let d = d.to_str().unwrap();
        let cases: Vec<(Vec<&str>, ConfigError)> = vec![
            (vec!["--validators", "0"], ConfigError::ValidatorCount(0)),
            (vec!["--validators", "33"], ConfigError::ValidatorCount(33)),
            (
                vec!["--validators", "1", "--slot-ms", "0"],
                ConfigError::ZeroSlot,
            ),
            (
                vec!["--validators", "1", "--slots-per-epoch", "10"],
                ConfigError::EpochLength(10),
            ),
            (
                vec!["--validators", "1", "--etcd-members", "3"],
                ConfigError::MembersWithoutEtcd,
            ),
            (
                vec!["--validators", "1", "--etcd", "--etcd-members", "2"],
                ConfigError::EtcdMembers(2),
            ),
            (
                vec!["--validators", "1", "--failover-pair"],
                ConfigError::PairWithoutEtcd,
            ),
            (
                vec!["--validators", "3", "--base-port", "65520"],
                ConfigError::BasePortRange {
                    base: 65520,
                    nodes: 3,
                    last: 65549,
                    max: 65506,
                },
            ),
            (
                vec![
                    "--validators",
                    "1",
                    "--validator-bin",
                    "/nonexistent/huione-validator",
                ],
                ConfigError::BadValidatorBin("/nonexistent/huione-validator".into()),
            ),
        ];
        for (args, want) in cases {
            let mut all = args.clone();
            all.extend_from_slice(&["--dir", d]);
            assert_eq!(resolve(&all, &search).unwrap_err(), want, "{args:?}");
        }
        // A non-empty dir, a file as dir, a too-long dir.
        std::fs::write(tmp.path().join("c-file"), "x").unwrap();
        let file = tmp.path().join("c-file");
        assert_eq!(
            resolve(
                &["--validators", "1", "--dir", tmp.path().to_str().unwrap()],
                &search
            )
            .unwrap_err(),
            ConfigError::DirNotEmpty(tmp.path().to_path_buf())
        );
        assert_eq!(
            resolve(
                &["--validators", "1", "--dir", file.to_str().unwrap()],
                &search
            )
            .unwrap_err(),
            ConfigError::DirIsFile(file)
        );
        let long = tmp.path().join("x".repeat(100));
        assert!(matches!(
            resolve(
                &["--validators", "1", "--dir", long.to_str().unwrap()],
                &search
            ),
            Err(ConfigError::SocketPathTooLong(_))
        ));
        let _ = bin;
    }
}
