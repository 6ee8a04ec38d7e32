//! Runs a local cluster (`huione-local-cluster`, next to this binary) for a while and
//! prints, per node: CPU and memory, votes sent, vote latency (block seen → vote sent)
//! p50/p99 from the node's /metrics, and how far the finalized slot advanced.
//!
//! `cargo build --release -p huione-validator -p huione-cluster -p huione-bench &&
//!  target/release/cluster-bench --validators 4 --secs 60`

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use huione_bench::{http_get, rpc};
use serde_json::Value;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 4)]
    validators: usize,
    #[arg(long, default_value_t = 60)]
    secs: u64,
    #[arg(long, default_value_t = 400)]
    slot_ms: u64,
    /// Use etcd (with a primary/secondary pair) instead of file storage only.
    #[arg(long)]
    etcd: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let exe_dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .context("no exe dir")?;
    let launcher = exe_dir.join("huione-local-cluster");
    if !launcher.exists() {
        bail!("{} not found: build it with cargo build --release -p huione-cluster -p huione-validator", launcher.display());
    }
    let dir = tempfile::tempdir()?;
    let cdir = dir.path().join("cluster");
    let mut cmd = Command::new(&launcher);
    cmd.args(["--validators", &args.validators.to_string(), "--dir"])
        .arg(&cdir)
        .args(["--slot-ms", &args.slot_ms.to_string()])
        .args(["--run-for-secs", &(args.secs + 30).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if args.etcd {
        cmd.args(["--etcd", "--failover-pair"]);
    }
    let mut child = cmd.spawn()?;
    let manifest = wait_running(&cdir.join("cluster.json"))?;
    let nodes: Vec<Value> = manifest["nodes"].as_array().cloned().unwrap_or_default();
    std::thread::sleep(Duration::from_secs(5));
    let start: Vec<(u64, Option<u64>)> = nodes
        .iter()
        .map(|n| (cpu_ticks(pid(n)), finalized(n)))
        .collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(args.secs));
    let wall = t0.elapsed().as_secs_f64();
    let ticks_per_sec = clock_ticks_per_sec();
    println!(
        "{} validators, {} ms slots, measured over {:.0} s",
        args.validators, args.slot_ms, wall
    );
    println!(
        "{:<12} {:>7} {:>9} {:>8} {:>12} {:>12} {:>14}",
        "node", "cpu %", "rss MiB", "votes", "vote p50 ms", "vote p99 ms", "finalized +"
    );
    for (n, (ticks0, fin0)) in nodes.iter().zip(start) {
        let p = pid(n);
        let cpu = (cpu_ticks(p) - ticks0) as f64 / ticks_per_sec / wall * 100.0;
        let rss = rss_kib(p) as f64 / 1024.0;
        let metrics =
            http_get(n["rpc_port"].as_u64().unwrap_or(0) as u16, "/metrics").unwrap_or_default();
        let m = |name: &str| metric(&metrics, name);
        let fin1 = finalized(n);
        println!(
            "{:<12} {:>7.1} {:>9.1} {:>8.0} {:>12.1} {:>12.1} {:>14}",
            n["name"].as_str().unwrap_or("?"),
            cpu,
            rss,
            m("huione_votes_sent_total").unwrap_or(0.0),
            m("huione_vote_latency_p50_microseconds").unwrap_or(0.0) / 1000.0,
            m("huione_vote_latency_p99_microseconds").unwrap_or(0.0) / 1000.0,
            match (fin0, fin1) {
                (Some(a), Some(b)) => (b.saturating_sub(a)).to_string(),
                _ => "-".into(),
            }
        );
    }
    // SIGINT: the launcher stops every node and etcd.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
    Ok(())
}

fn wait_running(path: &Path) -> anyhow::Result<Value> {
    for _ in 0..240 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                if v["state"] == "running" {
                    return Ok(v);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("the cluster did not start (see {})", path.display())
}

fn pid(n: &Value) -> u32 {
    n["pid"].as_u64().unwrap_or(0) as u32
}

fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may contain spaces) — utime is 14th, stime 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn finalized(n: &Value) -> Option<u64> {
    let port = n["rpc_port"].as_u64()? as u16;
    rpc(
        port,
        "getSlot",
        serde_json::json!([{ "commitment": "finalized" }]),
    )?
    .as_u64()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
