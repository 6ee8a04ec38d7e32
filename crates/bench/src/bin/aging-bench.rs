//! Aging: does a node that has run for months cost more than a young one?
//!
//! 1. Tower stores: `--stores` fenced stores (several identities in parallel) into a real
//!    one-member etcd over mutual TLS, started with a small `--quota-backend-bytes` and
//!    etcd's own periodic auto-compaction. Prints etcd's database size at the start, along
//!    the way and at the end, and whether any alarm was raised.
//! 2. Chain history: a young ledger (`--young-slots`) and an aged one (`--slots`) written
//!    by the fast generator with the node's own formats (block segments, snapshots,
//!    pruning at the default `--limit-ledger-slots`). Prints ledger bytes on disk.
//! 3. Restart-to-voting: `--rounds` starts of a real `huione-validator` (tower in the etcd
//!    above) on each ledger, from spawn to its first vote sent (from /metrics), and its RSS
//!    then and `--run-secs` later.
//! 4. The audit record's cost on the vote path: append + fdatasync on this disk.
//!
//! `cargo build -p huione-validator -p huione-bench && target/debug/aging-bench`
//! (add `--slots 100000 --stores 100000` for a quicker run).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use huione_bench::{header, http_get, row, Summary};
use huione_cluster::etcd::EtcdCluster;
use huione_cluster::ports::free_port;
use huione_core::audit::{AuditRecord, VoteRecord};
use huione_core::{Genesis, GenesisValidator, Hash};
use huione_keys::{Keypair, Pubkey};
use huione_tower::{SavedTower, Tower};
use huione_tower_storage::{EtcdConfig, EtcdTowerStorage, LockOwner, TowerStorage};
use huione_validator::ledger::generate::ChainGen;
use huione_validator::ledger::{AuditLog, LedgerConfig, LedgerFiles};

#[derive(Parser)]
#[command(about = "Aging benchmark: etcd size, ledger disk, RSS and restart time, young vs aged")]
struct Args {
    /// Slots of chain history in the aged ledger.
    #[arg(long, default_value_t = 1_000_000)]
    slots: u64,
    /// Slots of chain history in the young ledger.
    #[arg(long, default_value_t = 2_000)]
    young_slots: u64,
    /// Tower stores into etcd (0: skip this part).
    #[arg(long, default_value_t = 1_000_000)]
    stores: u64,
    /// Identities storing in parallel.
    #[arg(long, default_value_t = 16)]
    writers: u64,
    /// etcd's --quota-backend-bytes.
    #[arg(long, default_value_t = 64 << 20)]
    quota_bytes: u64,
    /// Only the tower stores (part 1), no ledgers or restarts.
    #[arg(long)]
    only_stores: bool,
    /// Restarts per ledger.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Slot length of the generated clusters, ms.
    #[arg(long, default_value_t = 100)]
    slot_ms: u64,
    /// Seconds a restarted node keeps running (for its RSS over time).
    #[arg(long, default_value_t = 5)]
    run_secs: u64,
    /// The validator binary (default: next to this one).
    #[arg(long)]
    validator_bin: Option<PathBuf>,
    /// Keep the work directory (printed) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.validator_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory")?
            .join("huione-validator"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it with cargo build -p huione-validator",
            bin.display()
        );
    }
    let work = tempfile::tempdir()?;
    println!("aging bench in {}", work.path().display());

    // A small quota; etcd's own auto-compaction (periodic, huione_testkit's retention)
    // is the backstop behind huione's compaction of the tower's history.
    let etcd = EtcdCluster::start_with_quota(1, args.quota_bytes)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    println!(
        "\n== 1. {} tower stores into etcd (quota {} MiB, huione's compaction, etcd's periodic auto-compaction {})",
        args.stores,
        args.quota_bytes >> 20,
        huione_cluster::etcd::AUTO_COMPACTION_RETENTION
    );
    let start_size = db_size(&etcd)?;
    println!("etcd db size at start: {}", mib(start_size));
    // The stores run (I/O-bound, in etcd) while the ledgers are generated (CPU-bound).
    let stores = std::thread::scope(|scope| -> anyhow::Result<_> {
        let stores = scope.spawn(|| {
            if args.stores == 0 {
                return Ok((None, String::new(), 0));
            }
            rt.block_on(tower_stores(&etcd, &args))
                .map(|(s, note, largest)| (Some(s), note, largest))
        });
        if args.only_stores {
            let stores = stores.join().expect("the store thread panicked")?;
            return Ok((None, stores));
        }
        println!("\n== 2. chain history with the node's own ledger formats (default retention)");
        let young = make_ledger(work.path(), "young", 11, args.young_slots, args.slot_ms)?;
        let aged = make_ledger(work.path(), "aged", 12, args.slots, args.slot_ms)?;
        let stores = stores.join().expect("the store thread panicked")?;
        Ok((Some((young, aged)), stores))
    })?;
    let (ledgers, store_summary) = stores;
    let end_size = db_size(&etcd)?;
    println!("\n== 1. (result) {} tower stores", args.stores);
    if let Some(summary) = &store_summary.0 {
        header();
        row(
            &format!("tower store, {} writers", args.writers),
            summary,
            &store_summary.1,
        );
    }
    println!(
        "etcd db size at start {}, at end {}, largest seen {}; alarms: {}",
        mib(start_size),
        mib(end_size),
        mib(store_summary.2),
        alarms(&etcd)
    );

    let Some((young, aged)) = ledgers else {
        return Ok(());
    };
    println!(
        "\n== 3. restart to first vote, {} rounds each (tower in the etcd above)",
        args.rounds
    );
    let etcd_flags = etcd.validator_flags();
    let mut results = Vec::new();
    for l in [&young, &aged] {
        results.push(restarts(&bin, l, &etcd_flags, &args)?);
    }
    header();
    for (l, r) in [&young, &aged].iter().zip(&results) {
        row(
            &format!("restart to vote, {} slots of history", l.history),
            &Summary::of(&mut r.times.clone()),
            &format!(
                "ledger load p50 {} ms",
                huione_bench::ms(Summary::of(&mut r.loads.clone()).p50)
            ),
        );
    }
    let (y, a) = (
        Summary::of(&mut results[0].times.clone()),
        Summary::of(&mut results[1].times.clone()),
    );
    println!(
        "aged/young restart p50 x{:.2}, max x{:.2} (target <= 1.5, aged < 5 s)",
        a.p50.as_secs_f64() / y.p50.as_secs_f64(),
        a.max.as_secs_f64() / y.max.as_secs_f64()
    );
    for (l, r) in [&young, &aged].iter().zip(&results) {
        println!(
            "RSS on the {} ledger: at first vote {} KiB (p50 over rounds), {} s later {} KiB",
            l.name,
            median(&r.rss_at_vote),
            args.run_secs,
            median(&r.rss_later)
        );
    }
    for l in [&young, &aged] {
        println!(
            "ledger {} after the restarts: {} on disk",
            l.name,
            mib(dir_bytes(&l.dir))
        );
    }

    println!("\n== 4. audit record on the vote path: append + fdatasync (this disk)");
    audit_cost(work.path())?;
    println!(
        "\netcd db size at the very end: {}; alarms: {}",
        mib(db_size(&etcd)?),
        alarms(&etcd)
    );
    if args.keep {
        let kept = work.keep();
        println!("kept {}", kept.display());
    }
    Ok(())
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn db_size(etcd: &EtcdCluster) -> anyhow::Result<u64> {
    let out = etcd.etcdctl(&["endpoint", "status", "-w", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("etcdctl endpoint status")?;
    v[0]["Status"]["dbSize"]
        .as_u64()
        .with_context(|| format!("no dbSize in {out}"))
}

fn alarms(etcd: &EtcdCluster) -> String {
    match etcd.etcdctl(&["alarm", "list"]) {
        Ok(s) if s.trim().is_empty() => "none".into(),
        Ok(s) => s.trim().replace('\n', "; "),
        Err(e) => format!("cannot list: {e}"),
    }
}

/// Towers as a busy validator writes them: 31 votes deep, one more vote each time.
fn next_tower(t: &mut Tower, slot: u64, kp: &Keypair) -> SavedTower {
    t.record_vote(slot, [slot as u8; 32], 1_700_000_000_000 + slot);
    SavedTower::new(t, kp).expect("own tower")
}

/// The stores' latency summary, a note on throughput, and the largest etcd size seen.
async fn tower_stores(etcd: &EtcdCluster, args: &Args) -> anyhow::Result<(Summary, String, u64)> {
    let tls = etcd.tls();
    let config = EtcdConfig::new(
        etcd.client_endpoints(),
        tls.ca_file,
        tls.cert_file,
        tls.key_file,
    );
    let storage = EtcdTowerStorage::connect(config).await?;
    let writers = args.writers.max(1);
    let per_writer = args.stores / writers;
    let started = Instant::now();
    let mut tasks = Vec::new();
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    for w in 0..writers {
        let storage = storage.clone();
        let progress = (w == 0).then(|| progress_tx.clone());
        tasks.push(tokio::spawn(async move {
            let kp = Keypair::from_secret(&[100 + w as u8; 32]);
            let lease = storage
                .acquire(
                    &kp.pubkey(),
                    LockOwner::for_this_process(kp.pubkey(), "aging-bench"),
                )
                .await?;
            let mut t = Tower::new(kp.pubkey());
            let mut samples = Vec::with_capacity(per_writer as usize);
            for i in 0..per_writer {
                let tower = next_tower(&mut t, i + 1, &kp);
                let s = Instant::now();
                storage
                    .store(&lease, &tower)
                    .await
                    .with_context(|| format!("store {i} of writer {w}"))?;
                samples.push(s.elapsed());
                if let Some(p) = &progress {
                    if (i + 1) % (per_writer / 10).max(1) == 0 {
                        let _ = p.send(i + 1);
                    }
                }
            }
            anyhow::Ok(samples)
        }));
    }
    drop(progress_tx);
    let mut largest = 0;
    while let Some(done) = progress_rx.recv().await {
        let size = db_size(etcd).unwrap_or(0);
        largest = largest.max(size);
        println!(
            "  stores: {:>3}% ({} in all), etcd db size {}, {:.0} s",
            done * 100 / per_writer.max(1),
            done * writers,
            mib(size),
            started.elapsed().as_secs_f64()
        );
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((
        Summary::of(&mut all),
        format!("{:.0} stores/s over {secs:.0} s", all.len() as f64 / secs),
        largest,
    ))
}

struct AgedLedger {
    name: String,
    dir: PathBuf,
    history: u64,
    identity_file: PathBuf,
    vote_account: Pubkey,
}

fn make_ledger(
    work: &Path,
    name: &str,
    seed: u8,
    slots: u64,
    slot_ms: u64,
) -> anyhow::Result<AgedLedger> {
    let id = Keypair::from_secret(&[seed; 32]);
    let vote_account = Keypair::from_secret(&[seed + 100; 32]).pubkey();
    let now = huione_os::clock::now_ms();
    let genesis = Genesis::new(
        vec![GenesisValidator {
            identity: id.pubkey(),
            vote_account,
            authorized_voter: id.pubkey(),
            stake: 100,
        }],
        slot_ms,
        8192,
        now - (slots + 10) * slot_ms,
    )?;
    let dir = work.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("genesis.json"), serde_json::to_vec(&genesis)?)?;
    let identity_file = work.join(format!("{name}-identity.json"));
    id.write_file(&identity_file, true)?;
    let start = Instant::now();
    let (mut files, _) = LedgerFiles::open(&dir, LedgerConfig::default(), genesis.hash)?;
    let mut gen = ChainGen::new(genesis.clone(), id.clone(), vote_account);
    let step = (slots / 10).max(1);
    let mut done = 0;
    let mut sizes = Vec::new();
    while done < slots {
        let n = step.min(slots - done);
        gen.write(&mut files, n, 1000)?;
        done += n;
        let disk = dir_bytes(&dir);
        sizes.push(disk);
        println!(
            "  {name}: {done} slots, root {}, {} blocks kept, {} on disk, {:.0} s",
            gen.root().unwrap_or(0),
            files.block_store().len(),
            mib(disk),
            start.elapsed().as_secs_f64()
        );
    }
    println!(
        "{name} ledger: {slots} slots in {:.0} s ({:.0} slots/s); {} on disk ({} blocks kept, {} snapshots); disk at each tenth: {}",
        start.elapsed().as_secs_f64(),
        slots as f64 / start.elapsed().as_secs_f64(),
        mib(dir_bytes(&dir)),
        files.block_store().len(),
        files.snapshots().list().len(),
        sizes.iter().map(|s| mib(*s)).collect::<Vec<_>>().join(", ")
    );
    Ok(AgedLedger {
        name: name.into(),
        dir,
        history: slots,
        identity_file,
        vote_account,
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(md) = e.metadata() else { continue };
        if md.is_dir() {
            total += dir_bytes(&e.path());
        } else {
            total += md.len();
        }
    }
    total
}

struct Restarts {
    times: Vec<Duration>,
    loads: Vec<Duration>,
    rss_at_vote: Vec<u64>,
    rss_later: Vec<u64>,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn restarts(
    bin: &Path,
    l: &AgedLedger,
    etcd_flags: &[String],
    args: &Args,
) -> anyhow::Result<Restarts> {
    let mut r = Restarts {
        times: Vec::new(),
        loads: Vec::new(),
        rss_at_vote: Vec::new(),
        rss_later: Vec::new(),
    };
    let log_path = l.dir.with_extension("log");
    // Round 0 is a warm-up, not counted: the first start on a generated ledger finds no
    // stored tower, so it skips the takeover floor every later restart waits out.
    for round in 0..=args.rounds {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let log_len = std::fs::metadata(&log_path)?.len();
        let spawned = Instant::now();
        let child = Command::new(bin)
            .arg("--ledger")
            .arg(&l.dir)
            .arg("--identity")
            .arg(&l.identity_file)
            .args(["--vote-account", &l.vote_account.to_string()])
            .args(["--gossip-port", &port.to_string()])
            .args(["--rpc-port", &port.to_string()])
            .args(etcd_flags)
            // The only validator: nobody else produces, so "caught up with the cluster"
            // cannot come before it votes; take the lock back at once.
            .arg("--reclaim-immediately")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut p = Proc(child);
        let pid = p.0.id();
        let voted = loop {
            if spawned.elapsed() > Duration::from_secs(120) {
                break None;
            }
            if let Ok(Some(st)) = p.0.try_wait() {
                bail!(
                    "the validator on {} exited ({st}); see {}",
                    l.dir.display(),
                    log_path.display()
                );
            }
            let sent = http_get(port, "/metrics")
                .and_then(|m| metric(&m, "huione_votes_sent_total"))
                .unwrap_or(0.0);
            if sent >= 1.0 {
                break Some(spawned.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let Some(t) = voted else {
            bail!(
                "no vote within 120 s on {}; see {}",
                l.dir.display(),
                log_path.display()
            );
        };
        r.times.push(t);
        r.rss_at_vote.push(rss_kib(pid));
        std::thread::sleep(Duration::from_secs(args.run_secs));
        r.rss_later.push(rss_kib(pid));
        send_signal(pid, libc::SIGTERM);
        let stop = Instant::now();
        while stop.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = p.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let new = text.get(log_len as usize..).unwrap_or("");
        let load = new
            .lines()
            .find(|l| l.contains("ledger loaded"))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("ms="))
                    .and_then(|v| v.parse::<u64>().ok())
            });
        let snapshot = new
            .lines()
            .find(|l| l.contains("ledger loaded"))
            .and_then(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with("snapshot="))
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let blocks = new
            .lines()
            .find(|l| l.contains("ledger loaded"))
            .and_then(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with("blocks="))
                    .map(str::to_string)
            })
            .unwrap_or_default();
        r.loads
            .push(Duration::from_millis(load.unwrap_or_default()));
        println!(
            "  {} round {}{}: first vote after {:.0} ms (ledger load {} ms, {snapshot}, {blocks}), RSS {} KiB -> {} KiB",
            l.name,
            round,
            if round == 0 { " (warm-up, not counted)" } else { "" },
            t.as_secs_f64() * 1000.0,
            load.map_or("?".into(), |v| v.to_string()),
            r.rss_at_vote.last().unwrap(),
            r.rss_later.last().unwrap()
        );
    }
    for v in [&mut r.rss_at_vote, &mut r.rss_later] {
        v.remove(0);
    }
    r.times.remove(0);
    r.loads.remove(0);
    Ok(r)
}

fn send_signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child this process started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn audit_cost(work: &Path) -> anyhow::Result<()> {
    let dir = work.join("audit-cost");
    std::fs::create_dir_all(&dir)?;
    let mut log = AuditLog::open(&dir, 64 << 20, 2)?;
    let record = |slot: u64| {
        AuditRecord::Vote(VoteRecord {
            vote_account: Pubkey::from_seed_byte(2),
            slot,
            hash: Hash([7; 32]),
            node: Pubkey::from_seed_byte(1),
            instance: "aging-bench-0123456789".into(),
            time_ms: 1_700_000_000_000 + slot,
        })
    };
    let n = 2000;
    let (mut append, mut synced) = (Vec::new(), Vec::new());
    for slot in 0..n {
        let s = Instant::now();
        log.append(&record(slot))?;
        append.push(s.elapsed());
        let s = Instant::now();
        log.append(&record(n + slot))?;
        log.sync()?;
        synced.push(s.elapsed());
    }
    header();
    row(
        "audit append (write only, as before)",
        &Summary::of(&mut append),
        "",
    );
    row(
        "audit append + fdatasync (now, per batch)",
        &Summary::of(&mut synced),
        "added to each vote batch",
    );
    Ok(())
}
