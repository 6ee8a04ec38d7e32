//! Real etcd servers and clusters over mutual TLS, in temp dirs (or a directory kept by
//! `huione-local-cluster`), with certificates made by `huione-certs`, plus process control
//! (kill, freeze, restart). Used by `huione-local-cluster` at run time and, re-exported by
//! `huione-testkit`, by the tests.
//!
//! ```no_run
//! let cluster = huione_cluster::etcd::EtcdCluster::start(3)?;
//! cluster.etcdctl(&["put", "k", "v"])?;
//! assert!(cluster.etcdctl(&["get", "k"])?.contains('v'));
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Needs `etcd` and `etcdctl` on PATH (`apt-get install etcd-server etcd-client`), or their
//! paths in `HUIONE_ETCD` / `HUIONE_ETCDCTL`. Set `HUIONE_TESTKIT_KEEP=1` to keep the temp
//! dir (certs, data, member logs) after the test for debugging.

pub mod process;

use crate::ports::free_port;
use anyhow::{bail, Context as _};
use huione_certs::{CertAndKey, CertOptions, CertPaths, FilePair};
pub use process::{
    cargo_build, command_in_netns, detach_from_terminal_and_die_with_parent, without_cargo_test_env,
};
use process::{find_binary, signal, tail};
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Raft heartbeat of test clusters, in ms (etcd's default is 100).
pub const HEARTBEAT_INTERVAL_MS: u64 = 50;
/// Raft election timeout of test clusters, in ms (etcd's default is 1000).
pub const ELECTION_TIMEOUT_MS: u64 = 500;
/// How long `start` and `restart` wait for members to answer a health check.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// etcd's backend quota (`--quota-backend-bytes`) of test and local clusters: etcd's own
/// default (2 GiB), made explicit. With huione compacting its history, a tower-only etcd
/// stays at a few MB; the quota is the backstop that turns a runaway into a clear NOSPACE
/// alarm instead of a full disk.
pub const QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// etcd's own compaction of test and local clusters (`--auto-compaction-mode periodic
/// --auto-compaction-retention 1h`): a backstop behind huione's compaction (and for other
/// users of the same etcd), keeping an hour of history to look at.
pub const AUTO_COMPACTION_RETENTION: &str = "1h";
/// Attempts with fresh ports when a port was taken between picking and binding.
const PORT_ATTEMPTS: usize = 5;

/// The files a client needs to reach the cluster over mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA that signed the etcd server certificates (`etcd-ca.pem`).
    pub ca_file: PathBuf,
    /// Client certificate (`validator.pem` unless made otherwise).
    pub cert_file: PathBuf,
    /// Client private key (`validator-key.pem` unless made otherwise).
    pub key_file: PathBuf,
    /// Name to verify the server certificate against: "localhost".
    pub domain_name: String,
}

/// Where one member runs when the members are spread over machines (network namespaces,
/// as root; see [`EtcdCluster::start_in_on_hosts`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberHost {
    /// The address its client and peer URLs use; the certificates carry it.
    pub ip: IpAddr,
    /// The network namespace it runs in (`ip netns exec NAME etcd ...`); `None`: this
    /// process's own.
    pub netns: Option<String>,
}

struct Member {
    name: String,
    /// Where it listens (client and peer URLs): 127.0.0.1 unless placed on a host.
    ip: IpAddr,
    /// The network namespace it runs in, if placed in one.
    netns: Option<String>,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// Length of the log when the current run started (its own messages follow).
    log_start: u64,
    tls: FilePair,
    child: Option<Child>,
}

/// A running etcd cluster of local processes. Dropping it kills every member (SIGCONT, then
/// SIGKILL), waits for them, and removes the temp dir.
pub struct EtcdCluster {
    members: Vec<Member>,
    certs: CertPaths,
    etcd_bin: PathBuf,
    etcdctl_bin: PathBuf,
    token: String,
    peer_tls: bool,
    /// Addresses members also listen on for clients, besides 127.0.0.1 (same port).
    extra_client_ips: Vec<IpAddr>,
    /// `--quota-backend-bytes` of every member.
    quota_backend_bytes: u64,
    /// Where each member runs ([`EtcdCluster::start_in_on_hosts`]; empty: 127.0.0.1).
    hosts: Vec<MemberHost>,
    /// The network namespace `etcdctl` runs in (health checks, leader queries), if any.
    client_netns: Option<String>,
    dir_path: PathBuf,
    /// Where member data dirs and logs go: `dir_path` for [`EtcdCluster::start`],
    /// `<dir>/etcd` for [`EtcdCluster::start_in`].
    members_dir: PathBuf,
    /// Members run in their own process group (a terminal's Ctrl-C does not reach them) and
    /// get SIGTERM when this process dies ([`EtcdCluster::start_in`] only).
    detached: bool,
    /// `None` only once Drop kept it (`HUIONE_TESTKIT_KEEP`).
    dir: Option<tempfile::TempDir>,
}

static CLUSTER_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl EtcdCluster {
    /// Starts `members` etcd members on free 127.0.0.1 ports, with certificates generated
    /// by huione-certs in a fresh temp dir, client-cert-auth on, peer TLS on for
    /// `members > 1`; returns once every member answers a health check. Errors (with the
    /// tail of the member's log) if a member fails to start, and if `etcd` is not on PATH
    /// (telling to `apt-get install etcd-server`).
    pub fn start(members: usize) -> anyhow::Result<EtcdCluster> {
        Self::start_with_client_ips(members, &[])
    }

    /// Like [`EtcdCluster::start`], but each member also listens for clients on each of
    /// `ips` (same port as on 127.0.0.1), and the server certificates carry them as IP
    /// SANs. For clients in another network namespace: the addresses must exist on this
    /// host (for example the host end of a [`netns::NetnsLink`]). See
    /// [`EtcdCluster::client_endpoints_on`] and [`EtcdCluster::validator_flags_on`].
    pub fn start_with_client_ips(members: usize, ips: &[IpAddr]) -> anyhow::Result<EtcdCluster> {
        Self::start_temp(members, ips, QUOTA_BACKEND_BYTES)
    }

    /// Like [`EtcdCluster::start`], with `--quota-backend-bytes quota_bytes` instead of
    /// [`QUOTA_BACKEND_BYTES`]: for tests of what happens when etcd fills up.
    pub fn start_with_quota(members: usize, quota_bytes: u64) -> anyhow::Result<EtcdCluster> {
        Self::start_temp(members, &[], quota_bytes)
    }

    fn start_temp(members: usize, ips: &[IpAddr], quota: u64) -> anyhow::Result<EtcdCluster> {
        if members == 0 {
            bail!("EtcdCluster::start(0): a cluster needs at least one member");
        }
        let bins = etcd_binaries()?;
        let dir = tempfile::Builder::new()
            .prefix("huione-etcd-")
            .tempdir()
            .context("cannot create a temp dir for the etcd cluster")?;
        let root = dir.path().to_path_buf();
        let extra = Extra {
            client_ips: ips,
            quota_backend_bytes: quota,
            hosts: Vec::new(),
            client_netns: None,
        };
        Self::launch(bins, members, root.clone(), root, Some(dir), false, extra)
    }

    /// Like [`EtcdCluster::start_in`], with member `i` on `hosts[i]`: it listens for
    /// clients and peers on that address only (any free port), started in that network
    /// namespace, and the server and member certificates carry every member's address.
    /// `etcdctl` (the health checks of start and restart, [`EtcdCluster::etcdctl`],
    /// [`EtcdCluster::leader_index`]) runs in `client_netns`, a namespace that reaches the
    /// members. For a cluster whose members are machines of a
    /// `huione_testkit::netns::Subnet` (as root).
    pub fn start_in_on_hosts(
        dir: &Path,
        hosts: &[MemberHost],
        client_netns: Option<&str>,
    ) -> anyhow::Result<EtcdCluster> {
        if hosts.is_empty() {
            bail!("EtcdCluster::start_in_on_hosts: a cluster needs at least one member");
        }
        Self::start_kept(
            dir,
            hosts.len(),
            hosts.to_vec(),
            client_netns.map(str::to_string),
        )
    }

    /// Like [`EtcdCluster::start`], but everything stays in `dir` (created if missing) and is
    /// kept after the cluster is dropped: certificates in `<dir>/certs` (the seed's file
    /// names; refuses to replace different existing ones), member data dirs
    /// `<dir>/etcd/m<i>.etcd` and logs `<dir>/etcd/m<i>.log`. Members run in their own
    /// process group, so a terminal's Ctrl-C reaches only the caller, which stops them
    /// ([`EtcdCluster::stop`] or drop); they get SIGTERM if the caller dies first.
    pub fn start_in(dir: &Path, members: usize) -> anyhow::Result<EtcdCluster> {
        if members == 0 {
            bail!("EtcdCluster::start_in(0): a cluster needs at least one member");
        }
        Self::start_kept(dir, members, Vec::new(), None)
    }

    /// The launch of [`EtcdCluster::start_in`] and [`EtcdCluster::start_in_on_hosts`]:
    /// everything under `dir`, kept, members detached.
    fn start_kept(
        dir: &Path,
        members: usize,
        hosts: Vec<MemberHost>,
        client_netns: Option<String>,
    ) -> anyhow::Result<EtcdCluster> {
        let bins = etcd_binaries()?;
        let members_dir = dir.join("etcd");
        fs::create_dir_all(&members_dir)
            .with_context(|| format!("cannot create {}", members_dir.display()))?;
        let extra = Extra {
            client_ips: &[],
            quota_backend_bytes: QUOTA_BACKEND_BYTES,
            hosts,
            client_netns,
        };
        Self::launch(
            bins,
            members,
            dir.to_path_buf(),
            members_dir,
            None,
            true,
            extra,
        )
    }

    fn launch(
        (etcd_bin, etcdctl_bin): (PathBuf, PathBuf),
        members: usize,
        root: PathBuf,
        members_dir: PathBuf,
        dir: Option<tempfile::TempDir>,
        detached: bool,
        extra: Extra<'_>,
    ) -> anyhow::Result<EtcdCluster> {
        let extra_client_ips = extra.client_ips;
        let certs_dir = root.join("certs");
        let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into()];
        hosts.extend(extra_client_ips.iter().map(IpAddr::to_string));
        for h in &extra.hosts {
            if !hosts.contains(&h.ip.to_string()) {
                hosts.push(h.ip.to_string());
            }
        }
        let generated = huione_certs::generate(&CertOptions::new(hosts).with_members(members))
            .context("cannot generate test certificates")?;
        let certs = huione_certs::write(&certs_dir, &generated, false)
            .context("cannot write test certificates")?;
        let token = format!(
            "huione-test-{}-{}",
            std::process::id(),
            CLUSTER_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            certs,
            etcd_bin,
            etcdctl_bin,
            token,
            peer_tls: members > 1,
            extra_client_ips: extra_client_ips.to_vec(),
            quota_backend_bytes: extra.quota_backend_bytes,
            hosts: extra.hosts,
            client_netns: extra.client_netns,
            dir_path: root,
            members_dir,
            detached,
            dir,
        };
        let mut last_err = None;
        for attempt in 0..PORT_ATTEMPTS {
            cluster.kill_all();
            cluster.members = (0..members).map(|i| cluster.new_member(i)).collect();
            if attempt > 0 {
                eprintln!("huione-testkit: etcd port taken, retrying with new ports");
            }
            match cluster.launch_all() {
                Ok(()) => {
                    if std::env::var_os("HUIONE_TESTKIT_KEEP").is_some() {
                        eprintln!(
                            "huione-testkit: etcd cluster in {}",
                            cluster.dir().display()
                        );
                    }
                    return Ok(cluster);
                }
                Err(e) if cluster.port_collision() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err
            .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
            .context(format!(
                "etcd could not bind its ports in {PORT_ATTEMPTS} attempts (ports in use)"
            )))
    }

    /// Client endpoints "127.0.0.1:PORT" (no scheme; the member's address if placed on a
    /// host), one per member, in member order.
    pub fn client_endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Client endpoint of member `i`: "127.0.0.1:PORT" (no scheme; its address if placed
    /// on a host).
    pub fn endpoint(&self, i: usize) -> String {
        SocketAddr::new(self.members[i].ip, self.members[i].client_port).to_string()
    }

    /// Client URLs "https://127.0.0.1:PORT", one per member.
    pub fn client_urls(&self) -> Vec<String> {
        self.client_endpoints()
            .iter()
            .map(|e| format!("https://{e}"))
            .collect()
    }

    /// Peer URL of member `i` ("https://127.0.0.1:PORT", or http for a single member; its
    /// address if placed on a host).
    pub fn peer_url(&self, i: usize) -> String {
        let scheme = if self.peer_tls { "https" } else { "http" };
        let m = &self.members[i];
        format!("{scheme}://{}", SocketAddr::new(m.ip, m.peer_port))
    }

    /// The validator client certificate and key, and the CA (`domain_name` "localhost").
    pub fn tls(&self) -> ClientTls {
        self.client_tls(&self.certs.validator)
    }

    /// The `huione-validator` flags that put the tower in this cluster:
    /// `--tower-storage etcd --etcd-endpoint ... --etcd-cacert-file ... --etcd-cert-file ...
    /// --etcd-key-file ...`.
    pub fn validator_flags(&self) -> Vec<String> {
        self.validator_flags_for(self.client_endpoints())
    }

    /// Client endpoints "IP:PORT" on one of the extra addresses given to
    /// [`EtcdCluster::start_with_client_ips`], one per member.
    pub fn client_endpoints_on(&self, ip: IpAddr) -> Vec<String> {
        assert!(
            self.extra_client_ips.contains(&ip),
            "etcd does not listen on {ip}; pass it to EtcdCluster::start_with_client_ips"
        );
        self.members
            .iter()
            .map(|m| SocketAddr::new(ip, m.client_port).to_string())
            .collect()
    }

    /// [`EtcdCluster::validator_flags`] with the endpoints on `ip` (see
    /// [`EtcdCluster::client_endpoints_on`]). The domain name stays "localhost".
    pub fn validator_flags_on(&self, ip: IpAddr) -> Vec<String> {
        self.validator_flags_for(self.client_endpoints_on(ip))
    }

    fn validator_flags_for(&self, endpoints: Vec<String>) -> Vec<String> {
        let tls = self.tls();
        let mut v = vec!["--tower-storage".to_string(), "etcd".into()];
        for e in endpoints {
            v.push("--etcd-endpoint".into());
            v.push(e);
        }
        for (flag, path) in [
            ("--etcd-cacert-file", &tls.ca_file),
            ("--etcd-cert-file", &tls.cert_file),
            ("--etcd-key-file", &tls.key_file),
        ] {
            v.push(flag.into());
            v.push(path.display().to_string());
        }
        v
    }

    /// TLS files for a client with the given certificate pair and the cluster's CA.
    pub fn client_tls(&self, pair: &FilePair) -> ClientTls {
        ClientTls {
            ca_file: self.certs.ca.cert.clone(),
            cert_file: pair.cert.clone(),
            key_file: pair.key.clone(),
            domain_name: "localhost".to_string(),
        }
    }

    /// Writes a client certificate signed by the cluster's CA that expired yesterday
    /// (`<certs>/expired-client.pem`) and returns TLS files using it. etcd must refuse it.
    pub fn expired_client_tls(&self) -> anyhow::Result<ClientTls> {
        let ca = huione_certs::read_pair(&self.certs.ca)?;
        let client = huione_certs::generate_expired_client(&ca, "expired-validator")?;
        self.write_client("expired-client", &client)
    }

    /// Writes a client certificate signed by an unrelated CA (`<certs>/foreign-client.pem`)
    /// and returns TLS files using it (the CA file stays the cluster's, so the client
    /// still trusts the server). etcd must refuse it.
    pub fn foreign_client_tls(&self) -> anyhow::Result<ClientTls> {
        let foreign = huione_certs::generate_foreign_ca_client("validator")?;
        self.write_client("foreign-client", &foreign.client)
    }

    /// Writes `cert` as `<certs>/<name>.pem` + `<certs>/<name>-key.pem` (key mode 0600) and
    /// returns TLS files using it with the cluster's CA.
    pub fn write_client(&self, name: &str, cert: &CertAndKey) -> anyhow::Result<ClientTls> {
        let pair = FilePair {
            cert: self.certs_dir().join(format!("{name}.pem")),
            key: self.certs_dir().join(format!("{name}-key.pem")),
        };
        process::write_file(&pair.cert, cert.cert_pem.as_bytes(), 0o644)?;
        process::write_file(&pair.key, cert.key_pem.as_bytes(), 0o600)?;
        Ok(self.client_tls(&pair))
    }

    /// Directory holding the certificates (`etcd-ca.pem`, `etcd.pem`, `validator.pem`, ...).
    pub fn certs_dir(&self) -> &Path {
        &self.certs.dir
    }

    /// Paths of all certificate files.
    pub fn cert_paths(&self) -> &CertPaths {
        &self.certs
    }

    /// The cluster's root dir: `certs/` and, for [`EtcdCluster::start`], the member data
    /// dirs and logs (for [`EtcdCluster::start_in`] those are in `etcd/`).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Number of members.
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// PID of member `i`, `None` if it was killed and not restarted.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Member `i`'s process is running (not killed, not exited). A frozen member counts.
    pub fn is_running(&mut self, i: usize) -> bool {
        match self.members[i].child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Member `i`'s log file (stdout and stderr of every run of it).
    pub fn log_path(&self, i: usize) -> &Path {
        &self.members[i].log_path
    }

    /// The last `lines` lines of member `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        tail(&self.members[i].log_path, lines)
    }

    /// SIGKILLs member `i` (after a SIGCONT, in case it is frozen) and waits for it. No-op
    /// if it is not running.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            signal(child.id(), libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops every member gracefully: SIGCONT + SIGTERM to all, then SIGKILL to any still
    /// running after `timeout`; waits for all of them.
    pub fn stop(&mut self, timeout: Duration) {
        for m in &self.members {
            if let Some(child) = &m.child {
                signal(child.id(), libc::SIGCONT);
                signal(child.id(), libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + timeout;
        for m in &mut self.members {
            let Some(mut child) = m.child.take() else {
                continue;
            };
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOPs member `i`: it keeps its sockets but answers nothing (a hung server).
    pub fn freeze(&self, i: usize) {
        if let Some(pid) = self.pid(i) {
            signal(pid, libc::SIGSTOP);
        }
    }

    /// SIGCONTs member `i` after [`EtcdCluster::freeze`].
    pub fn thaw(&self, i: usize) {
        if let Some(pid) = self.pid(i) {
            signal(pid, libc::SIGCONT);
        }
    }

    /// Starts member `i` again with its data dir and ports (killing it first if it still
    /// runs) and waits until it answers a health check (which needs a quorum).
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        let mut last_err = None;
        // The old process's ports may linger briefly; the ports cannot change (peers know them).
        for _ in 0..PORT_ATTEMPTS {
            self.spawn(i)?;
            match self.wait_healthy(i, START_TIMEOUT) {
                Ok(()) => return Ok(()),
                Err(e)
                    if process::mentions_port_in_use(
                        &self.members[i].log_path,
                        self.members[i].log_start,
                    ) =>
                {
                    self.kill(i);
                    last_err = Some(e);
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
    }

    /// Index of the running member that says it is the raft leader (`etcdctl endpoint
    /// status` asked of each member in turn); `None` if none does. Best effort: a frozen
    /// member costs a one-second timeout, and a deposed leader may not know it yet.
    pub fn leader_index(&self) -> Option<usize> {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            let Ok(out) = self.etcdctl_at(
                &[self.endpoint(i)],
                &[
                    "--dial-timeout=1s",
                    "--command-timeout=1s",
                    "endpoint",
                    "status",
                    "--write-out=fields",
                ],
            ) else {
                continue;
            };
            let (Some(member_id), Some(leader)) = (field(&out, "MemberID"), field(&out, "Leader"))
            else {
                continue;
            };
            // Only a member's claim about itself counts: a follower may still name a leader
            // that was just killed.
            if member_id == leader {
                return Some(i);
            }
        }
        None
    }

    /// Waits until some running member reports a leader and returns its index. After a
    /// leader is killed, writes fail ("request timed out, possibly due to previous leader
    /// failure") until this returns.
    pub fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader_index() {
                return Ok(i);
            }
            if Instant::now() >= deadline {
                bail!("no etcd member reports a leader after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `etcdctl` (API v3) with all client endpoints and the validator TLS files,
    /// returning stdout; errors with stderr if it exits non-zero. Your flags come after the
    /// defaults (`--dial-timeout=2s --command-timeout=5s`), so they override them.
    pub fn etcdctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let endpoints = self.client_endpoints();
        let mut all = vec!["--dial-timeout=2s", "--command-timeout=5s"];
        all.extend_from_slice(args);
        self.etcdctl_at(&endpoints, &all)
    }

    /// Runs `etcdctl` against member `i` only.
    pub fn etcdctl_member(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["--dial-timeout=2s", "--command-timeout=5s"];
        all.extend_from_slice(args);
        self.etcdctl_at(&[self.endpoint(i)], &all)
    }

    /// Waits until member `i` answers `etcdctl endpoint health`; errors with its log tail
    /// if it exits or `timeout` passes.
    pub fn wait_healthy(&mut self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let endpoint = self.endpoint(i);
        loop {
            if let Some(child) = self.members[i].child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.members[i].child = None;
                    bail!(
                        "etcd member {} ({endpoint}) exited with {status} during start-up; \
                         log {}:\n{}",
                        self.members[i].name,
                        self.members[i].log_path.display(),
                        self.log_tail(i, 30)
                    );
                }
            } else {
                bail!("etcd member {} is not running", self.members[i].name);
            }
            let last = match self.etcdctl_at(
                std::slice::from_ref(&endpoint),
                &[
                    "--dial-timeout=1s",
                    "--command-timeout=2s",
                    "endpoint",
                    "health",
                ],
            ) {
                Ok(_) => return Ok(()),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "etcd member {} ({endpoint}) not healthy after {timeout:?}: {last}\nlog {}:\n{}",
                    self.members[i].name,
                    self.members[i].log_path.display(),
                    self.log_tail(i, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn etcdctl_at(&self, endpoints: &[String], args: &[&str]) -> anyhow::Result<String> {
        let tls = self.tls();
        let output = command_in_netns(self.client_netns.as_deref(), &self.etcdctl_bin)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg(format!("--cacert={}", tls.ca_file.display()))
            .arg(format!("--cert={}", tls.cert_file.display()))
            .arg(format!("--key={}", tls.key_file.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.etcdctl_bin.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!(
                "etcdctl {} failed ({}): {}{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                if stdout.trim().is_empty() {
                    String::new()
                } else {
                    format!("\nstdout: {}", stdout.trim())
                }
            );
        }
        Ok(stdout)
    }

    fn new_member(&self, i: usize) -> Member {
        let name = format!("m{i}");
        let tls = if self.peer_tls {
            self.certs.members[i].clone()
        } else {
            self.certs.etcd.clone()
        };
        let host = self.hosts.get(i);
        Member {
            ip: host.map_or(IpAddr::from([127, 0, 0, 1]), |h| h.ip),
            netns: host.and_then(|h| h.netns.clone()),
            data_dir: self.members_dir.join(format!("{name}.etcd")),
            log_path: self.members_dir.join(format!("{name}.log")),
            log_start: 0,
            client_port: free_port(),
            peer_port: free_port(),
            tls,
            child: None,
            name,
        }
    }

    fn launch_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            let _ = fs::remove_dir_all(&self.members[i].data_dir);
            let _ = fs::remove_file(&self.members[i].log_path);
            self.spawn(i)?;
        }
        for i in 0..self.members.len() {
            self.wait_healthy(i, START_TIMEOUT)?;
        }
        Ok(())
    }

    fn port_collision(&self) -> bool {
        self.members
            .iter()
            .any(|m| process::mentions_port_in_use(&m.log_path, m.log_start))
    }

    fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let initial_cluster = (0..self.members.len())
            .map(|j| format!("{}={}", self.members[j].name, self.peer_url(j)))
            .collect::<Vec<_>>()
            .join(",");
        let client_url = self.client_urls()[i].clone();
        let listen_urls = std::iter::once(client_url.clone())
            .chain(self.extra_client_ips.iter().map(|ip| {
                format!(
                    "https://{}",
                    SocketAddr::new(*ip, self.members[i].client_port)
                )
            }))
            .collect::<Vec<_>>()
            .join(",");
        let peer_url = self.peer_url(i);
        let ca = self.certs.ca.cert.clone();
        let m = &self.members[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .with_context(|| format!("cannot open {}", m.log_path.display()))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log2 = log
            .try_clone()
            .with_context(|| format!("cannot open {}", m.log_path.display()))?;
        // `ip netns exec` execs etcd without forking: the child's pid is etcd's.
        let mut cmd = command_in_netns(m.netns.as_deref(), &self.etcd_bin);
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(&listen_urls)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(&initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--cert-file")
            .arg(&m.tls.cert)
            .arg("--key-file")
            .arg(&m.tls.key)
            .arg("--client-cert-auth")
            .arg("--trusted-ca-file")
            .arg(&ca)
            .arg("--heartbeat-interval")
            .arg(HEARTBEAT_INTERVAL_MS.to_string())
            .arg("--election-timeout")
            .arg(ELECTION_TIMEOUT_MS.to_string())
            .arg("--quota-backend-bytes")
            .arg(self.quota_backend_bytes.to_string())
            .arg("--auto-compaction-mode")
            .arg("periodic")
            .arg("--auto-compaction-retention")
            .arg(AUTO_COMPACTION_RETENTION)
            .arg("--logger")
            .arg("zap")
            .arg("--log-outputs")
            .arg("stderr");
        if self.peer_tls {
            cmd.arg("--peer-cert-file")
                .arg(&m.tls.cert)
                .arg("--peer-key-file")
                .arg(&m.tls.key)
                .arg("--peer-client-cert-auth")
                .arg("--peer-trusted-ca-file")
                .arg(&ca);
        }
        if self.detached {
            process::detach_from_terminal_and_die_with_parent(&mut cmd);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .with_context(|| format!("cannot start {}", self.etcd_bin.display()))?;
        self.members[i].child = Some(child);
        self.members[i].log_start = log_start;
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
        if std::env::var_os("HUIONE_TESTKIT_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("huione-testkit: kept {}", dir.keep().display());
            }
        }
    }
}

/// Launch settings besides the member count and directories.
struct Extra<'a> {
    /// Addresses members also listen on for clients, besides 127.0.0.1.
    client_ips: &'a [IpAddr],
    quota_backend_bytes: u64,
    hosts: Vec<MemberHost>,
    client_netns: Option<String>,
}

/// The `etcd` and `etcdctl` binaries (env override or PATH).
fn etcd_binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    Ok((
        find_binary("HUIONE_ETCD", "etcd", "etcd-server")?,
        find_binary("HUIONE_ETCDCTL", "etcdctl", "etcd-client")?,
    ))
}

/// Value of `"key" : value` in etcdctl's `--write-out=fields` output.
fn field(out: &str, key: &str) -> Option<String> {
    out.lines().find_map(|line| {
        let (k, v) = line.split_once(" : ")?;
        (k.trim().trim_matches('"') == key).then(|| v.trim().trim_matches('"').to_string())
    })
}
