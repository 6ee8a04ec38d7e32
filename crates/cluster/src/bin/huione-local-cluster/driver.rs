//! The launcher's processes: makes the keys, starts etcd, writes the genesis, spawns every
//! validator (own process group, SIGTERM on our death), waits until all answer RPC, shows
//! status, and stops everything. A [`Cluster`] stops what it started when dropped, so an
//! error or a panic on the way leaves no process behind.

use std::fs;
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use huione_cluster::config::{ClusterConfig, PortChoice};
use huione_cluster::etcd::EtcdCluster;
use huione_cluster::genesis::{build_genesis, write_genesis, GenesisParams};
use huione_cluster::manifest::{
    ClusterManifest, ClusterState, EtcdEntry, NodeEntry, FORMAT_VERSION,
};
use huione_cluster::plan::{
    node_names, plan_nodes, validator_args, ArgsContext, EtcdFlags, NodePlan, Role,
};
use huione_cluster::ports::{auto_blocks, fixed_blocks};
use huione_cluster::status::{
    progress_line, status_line, up_count, NodeState, NodeStatus, STATUS_LEGEND,
};
use huione_core::GenesisValidator;
use huione_keys::{Keypair, Pubkey};
use huione_rpc::client::blocking::RpcClient;

use crate::signals::stop_requests;

/// Stake of each staked validator, in lamports (all equal).
pub const STAKE_PER_VALIDATOR: u64 = 100_000_000_000;
/// Each JSON-RPC call to a node must finish within this.
const RPC_TIMEOUT: Duration = Duration::from_millis(400);
/// How often the launcher looks at the stop flag while it waits.
const POLL: Duration = Duration::from_millis(50);
/// etcd members get this long to exit on SIGTERM before SIGKILL.
const ETCD_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Log lines shown when a node fails to start.
const LOG_TAIL_LINES: usize = 25;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

struct Node {
    plan: NodePlan,
    child: Option<Child>,
    /// How the process ended, once it has.
    exit: Option<String>,
}

/// Everything the launcher started.
struct Cluster {
    nodes: Vec<Node>,
    etcd: Option<EtcdCluster>,
    manifest: Option<ClusterManifest>,
    stop_timeout: Duration,
    stopped: bool,
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

/// Sends `sig` to the process group led by `pid` (each node leads its own).
fn signal_group(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

/// The last `lines` lines of `path`.
fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sleeps `d` unless a stop is requested; true if it slept the whole time.
fn sleep_unless_stopped(d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop_requests() > 0 {
            return false;
        }
        std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
    }
    stop_requests() == 0
}

impl Cluster {
    /// Reaps exited nodes; returns those that exited since the last call.
    fn reap(&mut self) -> Vec<usize> {
        let mut newly = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let Some(child) = n.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                n.exit = Some(describe(status));
                n.child = None;
                newly.push(i);
            }
        }
        newly
    }

    /// Asks every running node for its slots and health (in parallel, each bounded by
    /// [`RPC_TIMEOUT`]). A node that does not answer is `silent`.
    fn observe(&self, silent: &NodeState) -> Vec<NodeStatus> {
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .nodes
                .iter()
                .map(|n| {
                    s.spawn(move || {
                        if let Some(how) = &n.exit {
                            return NodeState::Exited(how.clone());
                        }
                        let rpc = RpcClient::at(n.plan.rpc_addr(), RPC_TIMEOUT);
                        match (rpc.get_slot("processed"), rpc.get_slot("finalized")) {
                            (Ok(slot), Ok(finalized)) => NodeState::Up {
                                slot,
                                finalized,
                                healthy: rpc.get_health().is_ok(),
                            },
                            _ => silent.clone(),
                        }
                    })
                })
                .collect();
            self.nodes
                .iter()
                .zip(handles)
                .map(|(n, h)| NodeStatus {
                    name: n.plan.name.clone(),
                    state: h.join().unwrap_or(NodeState::Unreachable),
                })
                .collect()
        })
    }

    fn write_manifest(&mut self, state: ClusterState) {
        if let Some(m) = self.manifest.as_mut() {
            m.state = state;
            if let Err(e) = m.write() {
                eprintln!("huione-local-cluster: warning: {e}");
            }
        }
    }

    /// SIGTERM to every node, SIGKILL to those still running after the stop timeout (at
    /// once if the user signals again), then etcd. Idempotent.
    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let running: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.plan.name.as_str())
            .collect();
        if !running.is_empty() {
            say(&format!(
                "stopping {} node(s): SIGTERM, SIGKILL after {:?} (Ctrl-C again to kill now)",
                running.len(),
                self.stop_timeout
            ));
        }
        for n in &self.nodes {
            if let Some(child) = &n.child {
                signal_group(child.id(), libc::SIGCONT);
                signal_group(child.id(), libc::SIGTERM);
            }
        }
        let requests = stop_requests();
        let deadline = Instant::now() + self.stop_timeout;
        loop {
            self.reap();
            let alive = self.nodes.iter().any(|n| n.child.is_some());
            if !alive || Instant::now() >= deadline || stop_requests() > requests {
                break;
            }
            std::thread::sleep(POLL);
        }
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                signal_group(child.id(), libc::SIGKILL);
                let status = child.wait().map(describe).unwrap_or_default();
                say(&format!(
                    "{} did not exit on SIGTERM: killed ({status})",
                    n.plan.name
                ));
                n.exit = Some(status);
            }
        }
        if let Some(mut etcd) = self.etcd.take() {
            say("stopping etcd");
            etcd.stop(ETCD_STOP_TIMEOUT);
        }
        self.write_manifest(ClusterState::Stopped);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Identity (and vote account, for staked nodes) of each planned node, written to its dir.
fn make_keys(plans: &[NodePlan]) -> anyhow::Result<Vec<(Pubkey, Option<Pubkey>)>> {
    plans
        .iter()
        .map(|p| {
            fs::create_dir_all(&p.dir)
                .with_context(|| format!("cannot create {}", p.dir.display()))?;
            let identity = Keypair::generate()?;
            identity.write_file(&p.identity_keypair, false)?;
            let vote = match &p.vote_account_keypair {
                Some(path) => {
                    let k = Keypair::generate()?;
                    k.write_file(path, false)?;
                    Some(k.pubkey())
                }
                None => None,
            };
            Ok((identity.pubkey(), vote))
        })
        .collect()
}

fn spawn(bin: &Path, args: &[String], plan: &NodePlan) -> anyhow::Result<Child> {
    fs::create_dir_all(&plan.ledger)
        .with_context(|| format!("cannot create {}", plan.ledger.display()))?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&plan.log)
        .with_context(|| format!("cannot open {}", plan.log.display()))?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        // The log goes to a file: no terminal colour codes in it (unless asked for).
        .env(
            "NO_COLOR",
            std::env::var_os("NO_COLOR").unwrap_or_else(|| "1".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    huione_cluster::etcd::detach_from_terminal_and_die_with_parent(&mut cmd);
    cmd.spawn()
        .with_context(|| format!("cannot start {} for {}", bin.display(), plan.name))
}

fn etcd_entry(etcd: &EtcdCluster, dir: &Path) -> EtcdEntry {
    let tls = etcd.tls();
    EtcdEntry {
        members: etcd.members(),
        flags: EtcdFlags {
            endpoints: etcd.client_endpoints(),
            cacert_file: tls.ca_file,
            cert_file: tls.cert_file,
            key_file: tls.key_file,
            domain_name: tls.domain_name,
        },
        certs_dir: etcd.certs_dir().to_path_buf(),
        data_dir: dir.join("etcd"),
        logs: (0..etcd.members())
            .map(|i| etcd.log_path(i).to_path_buf())
            .collect(),
        pids: (0..etcd.members()).map(|i| etcd.pid(i)).collect(),
    }
}

/// Runs the cluster until a stop signal or `--run-for-secs`, then stops it.
pub fn run(cfg: &ClusterConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    fs::create_dir_all(&cfg.dir).with_context(|| format!("cannot create {}", cfg.dir.display()))?;
    let names = node_names(
        cfg.validators,
        cfg.etcd_members.is_some(),
        cfg.failover_pair,
    );
    let name_list: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let blocks = match cfg.ports {
        PortChoice::Base(base) => fixed_blocks(base, &name_list)?,
        PortChoice::Auto => auto_blocks(names.len(), std::process::id())?,
    };
    let plans = plan_nodes(&cfg.dir, &names, &blocks);
    say(&format!(
        "huione-local-cluster: {} node(s) in {}: {}",
        plans.len(),
        cfg.dir.display(),
        name_list.join(", ")
    ));
    let keys = make_keys(&plans)?;
    let mut cluster = Cluster {
        nodes: Vec::new(),
        etcd: None,
        manifest: None,
        stop_timeout: cfg.stop_timeout,
        stopped: false,
    };
    if let Some(members) = cfg.etcd_members {
        say(&format!(
            "starting etcd: {members} member(s), mutual TLS, certificates in {}",
            cfg.dir.join("certs").display()
        ));
        let etcd = EtcdCluster::start_in(&cfg.dir, members).context("cannot start etcd")?;
        say(&format!("etcd up: {}", etcd.client_endpoints().join(", ")));
        cluster.etcd = Some(etcd);
    }
    if stop_requests() > 0 {
        say("interrupted before the validators started");
        return Ok(());
    }

    let staked: Vec<GenesisValidator> = plans
        .iter()
        .zip(&keys)
        .filter_map(|(p, (identity, vote))| {
            vote.filter(|_| p.staked())
                .map(|vote_account| GenesisValidator {
                    identity: *identity,
                    vote_account,
                    authorized_voter: *identity,
                    stake: STAKE_PER_VALIDATOR,
                })
        })
        .collect();
    let params = GenesisParams {
        slot_ms: cfg.slot_ms,
        slots_per_epoch: cfg.slots_per_epoch,
        start_time_ms: huione_os::clock::now_ms().saturating_add(cfg.start_in_ms),
    };
    let genesis = build_genesis(staked, &params)?;
    let genesis_path = cfg.dir.join("genesis.json");
    write_genesis(&genesis_path, &genesis, false)?;

    let etcd_flags = cluster.etcd.as_ref().map(|e| etcd_entry(e, &cfg.dir));
    let primary_vote = plans
        .iter()
        .zip(&keys)
        .find(|(p, _)| p.role == Role::Primary)
        .and_then(|(_, (_, vote))| *vote);
    let entrypoint = plans[0].gossip_addr();
    let mut entries = Vec::new();
    for (plan, (identity, vote)) in plans.iter().zip(&keys) {
        let vote_account = vote
            .or(primary_vote)
            .context("the secondary needs a primary")?;
        let args = validator_args(
            plan,
            &ArgsContext {
                genesis: &genesis_path,
                entrypoint: (plan.index > 0).then_some(entrypoint),
                vote_account,
                etcd: etcd_flags.as_ref().map(|e| &e.flags),
                extra: &cfg.validator_args,
            },
        );
        let child = spawn(&cfg.validator_bin, &args, plan)?;
        let mut command = vec![cfg.validator_bin.display().to_string()];
        command.extend(args);
        let stake = if plan.staked() {
            STAKE_PER_VALIDATOR
        } else {
            0
        };
        let mut entry = NodeEntry::new(plan, *identity, vote_account, stake, command);
        entry.pid = Some(child.id());
        say(&format!(
            "started {} ({}), pid {}, rpc {}, gossip {}",
            plan.name,
            plan.role.as_str(),
            child.id(),
            plan.rpc_url(),
            plan.gossip_addr()
        ));
        entries.push(entry);
        cluster.nodes.push(Node {
            plan: plan.clone(),
            child: Some(child),
            exit: None,
        });
    }
    cluster.manifest = Some(ClusterManifest {
        format_version: FORMAT_VERSION,
        state: ClusterState::Starting,
        launcher_pid: std::process::id(),
        dir: cfg.dir.clone(),
        genesis: genesis_path,
        genesis_hash: genesis.hash.to_string(),
        slot_ms: genesis.slot_duration_ms,
        slots_per_epoch: genesis.slots_per_epoch,
        start_time_ms: genesis.start_time_ms,
        entrypoint: entrypoint.to_string(),
        validator_bin: cfg.validator_bin.clone(),
        nodes: entries,
        etcd: etcd_flags,
    });
    cluster.write_manifest(ClusterState::Starting);
    say(&format!(
        "wrote {}",
        ClusterManifest::path_in(&cfg.dir).display()
    ));

    if !wait_until_up(&mut cluster, cfg)? {
        say("interrupted during start-up");
        cluster.stop();
        return Ok(());
    }
    cluster.write_manifest(ClusterState::Running);
    say(&format!(
        "cluster up in {:.1}s; logs in {}/<node>/validator.log",
        started.elapsed().as_secs_f64(),
        cfg.dir.display()
    ));
    say(STATUS_LEGEND);
    run_status(&mut cluster, cfg);
    cluster.stop();
    say("stopped");
    Ok(())
}

/// Shows progress until every node answers RPC. `Ok(false)` if a stop was requested;
/// an error (with the node's log tail) if a node exits or the start timeout passes.
fn wait_until_up(cluster: &mut Cluster, cfg: &ClusterConfig) -> anyhow::Result<bool> {
    let deadline = Instant::now() + cfg.start_timeout;
    let mut last_up = usize::MAX;
    let mut last_print: Option<Instant> = None;
    loop {
        if stop_requests() > 0 {
            return Ok(false);
        }
        cluster.reap();
        if let Some(n) = cluster.nodes.iter().find(|n| n.exit.is_some()) {
            bail!(
                "{} exited during start-up ({}); last lines of {}:\n{}",
                n.plan.name,
                n.exit.as_deref().unwrap_or_default(),
                n.plan.log.display(),
                tail(&n.plan.log, LOG_TAIL_LINES)
            );
        }
        let statuses = cluster.observe(&NodeState::Starting);
        let up = up_count(&statuses);
        if up != last_up || last_print.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            say(&progress_line(&statuses));
            last_up = up;
            last_print = Some(Instant::now());
        }
        if up == statuses.len() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            let silent: Vec<String> = statuses
                .iter()
                .zip(&cluster.nodes)
                .filter(|(s, _)| !matches!(s.state, NodeState::Up { .. }))
                .map(|(s, n)| format!("{} (log {})", s.name, n.plan.log.display()))
                .collect();
            bail!(
                "not every node answers RPC after {:?} (--start-timeout-secs): {}",
                cfg.start_timeout,
                silent.join(", ")
            );
        }
        sleep_unless_stopped(Duration::from_millis(500));
    }
}

/// One status line per second until a stop is requested or `--run-for-secs` passes.
fn run_status(cluster: &mut Cluster, cfg: &ClusterConfig) {
    let running_since = Instant::now();
    let mut next = Instant::now();
    loop {
        for i in cluster.reap() {
            let n = &cluster.nodes[i];
            say(&format!(
                "{} exited ({}); log {}",
                n.plan.name,
                n.exit.as_deref().unwrap_or_default(),
                n.plan.log.display()
            ));
        }
        let statuses = cluster.observe(&NodeState::Unreachable);
        say(&status_line(running_since.elapsed().as_secs(), &statuses));
        if cfg.run_for.is_some_and(|d| running_since.elapsed() >= d) {
            say("--run-for-secs reached");
            return;
        }
        next += Duration::from_secs(1);
        let now = Instant::now();
        if next < now {
            next = now;
        }
        if !sleep_unless_stopped(next - now) {
            return;
        }
    }
}
