//! The shipped alert rules on a real Prometheus: `prometheus` (Debian's package; the
//! binary from `$HUIONE_PROMETHEUS` or PATH) scrapes a real pair — three staked
//! validators, v2 the primary with its tower in etcd over mutual TLS, a hot standby for v2,
//! and `huione-watchtower` next to the standby — and evaluates
//! `deploy/prometheus/huione.rules.yml` exactly as shipped (loaded from the repository;
//! the failover alerts have no `for:`, so no duration needs shortening). Only the
//! scrape and evaluation intervals are short (1 s, in the test's own prometheus.yml).
//! Before the fault `HuioneFailover` must not be pending or firing; after the primary is
//! SIGKILLed it must fire, read from Prometheus's HTTP API (`/api/v1/alerts`), and the
//! standby must show `HuioneIdentityChanged`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use huione_core::audit::Auditor;
use huione_testkit::EtcdCluster;
use serde_json::{json, Value};

/// The alert rules as shipped.
fn rules_file() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/huione.rules.yml");
    p.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A Prometheus server the test started, on a free loopback port with its TSDB in a temp
/// dir; killed (and the dir removed) on drop.
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts `prometheus` scraping `validators` (job `huione`) and `watchtower` (job
    /// `huione-watchtower`, as the rules file's header and the README say) every second,
    /// evaluating `rules` every second; waits until it is ready.
    fn start(validators: &[u16], watchtower: u16, rules: &Path) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let targets = |ports: &[u16]| {
            ports
                .iter()
                .map(|p| format!("\"127.0.0.1:{p}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  \
               - job_name: huione\n    static_configs: [{{targets: [{}]}}]\n  \
               - job_name: huione-watchtower\n    static_configs: [{{targets: [{}]}}]\n",
            rules.display(),
            targets(validators),
            targets(&[watchtower]),
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let port = free_port();
        let log = dir.path().join("prometheus.log");
        let bin = std::env::var_os("HUIONE_PROMETHEUS").unwrap_or_else(|| "prometheus".into());
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        huione_testkit::detach_from_terminal_and_die_with_parent(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run {bin:?}: {e}; install Debian's prometheus package \
                 (scripts/deps.sh does) or set HUIONE_PROMETHEUS"
            )
        });
        let mut prom = Prometheus {
            child,
            port,
            log,
            _dir: dir,
        };
        let ready = wait_for(Duration::from_secs(30), || {
            if let Ok(Some(st)) = prom.child.try_wait() {
                panic!("prometheus exited with {st}:\n{}", prom.log());
            }
            http_get(port, "/-/ready").filter(|b| b.contains("Ready"))
        });
        assert!(
            ready.is_some(),
            "prometheus never got ready:\n{}",
            prom.log()
        );
        prom
    }

    fn log(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 40)
    }

    /// `GET path` from the HTTP API, its `data` (the API answered `success`).
    fn api(&self, path: &str) -> Option<Value> {
        let v: Value = serde_json::from_str(&http_get(self.port, path)?).ok()?;
        (v["status"] == "success").then(|| v["data"].clone())
    }

    /// An instant PromQL query: its result vector.
    fn query(&self, promql: &str) -> Option<Vec<Value>> {
        let r = self.api(&format!("/api/v1/query?query={}", url_encode(promql)))?;
        r["result"].as_array().cloned()
    }

    /// Every alert Prometheus holds now (pending or firing).
    fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts")
            .and_then(|d| d["alerts"].as_array().cloned())
            .unwrap_or_else(|| panic!("no answer from /api/v1/alerts:\n{}", self.log()))
    }

    /// How many times the rule group `group` of the rules file has been evaluated
    /// (Prometheus's own `prometheus_rule_group_iterations_total`).
    fn evaluations(&self, group: &str) -> Option<u64> {
        let text = http_get(self.port, "/metrics")?;
        let suffix = format!(";{group}\"}}");
        text.lines()
            .filter(|l| l.starts_with("prometheus_rule_group_iterations_total{"))
            .find_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                series.ends_with(&suffix).then(|| value.parse().ok())?
            })
    }
}

/// Percent-encodes a query parameter (unreserved characters stay).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The alerts named `name`.
fn named<'a>(alerts: &'a [Value], name: &str) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == name)
        .collect()
}

#[test]
fn prometheus_fires_the_failover_alert_when_the_primary_is_killed() {
    let etcd = EtcdCluster::start(1).unwrap();
    let mut c = Cluster::new(validator_bin(), 3, 200);
    let flags = etcd.validator_flags();
    let entry = c.nodes[0].gossip_port;
    c.nodes[2] = c.node_spec("primary", 2, Some(entry), &flags);
    let mut standby = c.standby_spec("secondary", 2, &flags, true);
    c.start_all();
    standby.start();
    let primary_id = c.keys[2].0.pubkey().to_string();
    let diagnostics = |c: &Cluster, standby: &Node| {
        format!(
            "{}\n---- secondary ----\n{}",
            c.logs(),
            tail(&standby.log(), 40)
        )
    };

    // The pair settles before the watchtower starts (as an operator would start it).
    let primary_ledger = c.nodes[2].ledger.clone();
    let settled = wait_for(Duration::from_secs(60), || {
        let votes = votes_by(&audit_records_so_far(&primary_ledger)?, &primary_id, 0);
        let standby_ok = standby.rpc("getHealth", json!([]))?["result"] == "ok";
        (votes.len() >= 5 && standby_ok).then_some(())
    });
    assert!(
        settled.is_some(),
        "not settled:\n{}",
        diagnostics(&c, &standby)
    );
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let wt = Watchtower::start(
        c.path(),
        &standby.ledger,
        &c.nodes[2].identity_file,
        [
            url(standby.rpc_port),
            url(c.nodes[2].rpc_port),
            url(c.nodes[0].rpc_port),
        ],
        &[],
    );
    let mut validators: Vec<u16> = c.nodes.iter().map(|n| n.rpc_port).collect();
    validators.push(standby.rpc_port);
    let rules = rules_file();
    let prom = Prometheus::start(&validators, wt.metrics_port, &rules);

    // The shipped rules loaded, and the failover alert is among them.
    let groups = prom.api("/api/v1/rules").expect("/api/v1/rules");
    let rule_names: Vec<&str> = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        rule_names.contains(&"HuioneFailover") && rule_names.contains(&"HuioneIdentityChanged"),
        "{} did not load as expected: {rule_names:?}\n{}",
        rules.display(),
        prom.log()
    );

    // Armed, every target scraped, and Prometheus holds at least two samples of the
    // failover counter (at 0), so `increase()` is defined before the fault.
    let baseline = wait_for(Duration::from_secs(60), || {
        let up = prom.query("up == 1")?;
        let samples = prom
            .query("count_over_time(huione_watchtower_failovers_total{result=\"ok\"}[1m]) >= 2")?;
        (wt.armed() && up.len() == validators.len() + 1 && !samples.is_empty()).then_some(())
    });
    assert!(
        baseline.is_some(),
        "no baseline (armed: {}, up: {:?}):\n{}\n---- prometheus ----\n{}\n---- watchtower ----\n{}",
        wt.armed(),
        prom.query("up"),
        diagnostics(&c, &standby),
        prom.log(),
        wt.log()
    );
    // Two more evaluations of the failover rules with that data: still no alert.
    let n0 = prom
        .evaluations("huione-failover")
        .unwrap_or_else(|| panic!("no rule group huione-failover:\n{}", prom.log()));
    let evaluated = wait_for(Duration::from_secs(30), || {
        let n = prom.evaluations("huione-failover")?;
        (n >= n0 + 2).then_some(n)
    });
    assert!(
        evaluated.is_some(),
        "the rules were not evaluated:\n{}",
        prom.log()
    );
    let before = prom.alerts();
    assert!(
        named(&before, "HuioneFailover").is_empty(),
        "HuioneFailover before any failover: {before:#?}"
    );
    assert!(
        named(&before, "HuioneIdentityChanged").is_empty(),
        "HuioneIdentityChanged before any failover: {before:#?}"
    );

    let t_fault = Instant::now();
    c.nodes[2].kill9();
    let firing = wait_for(Duration::from_secs(45), || {
        let alerts = prom.alerts();
        let failover = named(&alerts, "HuioneFailover")
            .into_iter()
            .find(|a| a["state"] == "firing")
            .cloned()?;
        let changed = named(&alerts, "HuioneIdentityChanged")
            .into_iter()
            .find(|a| a["state"] == "firing")
            .cloned()?;
        Some((failover, changed, t_fault.elapsed()))
    });
    let (failover, changed, after) = firing.unwrap_or_else(|| {
        panic!(
            "no firing HuioneFailover and HuioneIdentityChanged; alerts: {:#?}\n\
             watchtower audit: {:?}\n{}\n---- watchtower ----\n{}\n---- prometheus ----\n{}",
            prom.alerts(),
            wt.audit(),
            diagnostics(&c, &standby),
            wt.log(),
            prom.log()
        )
    });
    assert_eq!(
        failover["labels"]["job"], "huione-watchtower",
        "{failover:#}"
    );
    assert_eq!(failover["labels"]["result"], "ok", "{failover:#}");
    assert_eq!(failover["labels"]["severity"], "critical", "{failover:#}");
    assert_eq!(
        changed["labels"]["instance"],
        format!("127.0.0.1:{}", standby.rpc_port),
        "the standby changed identity: {changed:#}"
    );
    // The watchtower did fail over, once, and the standby now votes as the identity.
    let audit = wt.audit();
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0]["result"], "ok", "{audit:#?}");
    assert_eq!(
        standby.rpc("getIdentity", json!([])).unwrap()["result"]["identity"],
        primary_id.as_str()
    );
    // And nothing was voted twice.
    let mut records = Vec::new();
    for l in c.nodes.iter().map(|n| &n.ledger).chain([&standby.ledger]) {
        records.extend(audit_records(l));
    }
    let auditor = Auditor::audit_all(c.genesis.hash, &records);
    assert!(
        auditor.violations().is_empty(),
        "safety violations: {:#?}",
        auditor.violations()
    );
    eprintln!(
        "primary SIGKILLed -> HuioneFailover and HuioneIdentityChanged firing in Prometheus \
         after {} ms (1 s scrape and evaluation intervals)",
        after.as_millis()
    );
}
