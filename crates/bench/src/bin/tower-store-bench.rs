//! Tower store latency: etcd over mutual TLS (1 and 3 members), file storage with fsync,
//! and — in the same run, as the baseline — a bare etcd-client transaction of the same
//! size. Starts its own etcd servers on loopback.
//!
//! `cargo run --release -p huione-bench --bin tower-store-bench -- [STORES]`

use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions, Txn, TxnOp};
use huione_bench::{header, row, Summary};
use huione_cluster::etcd::EtcdCluster;
use huione_keys::Keypair;
use huione_tower::{SavedTower, Tower};
use huione_tower_storage::{
    EtcdConfig, EtcdTowerStorage, FileTowerStorage, LockOwner, TowerStorage,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let stores: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()
        .context("the argument is the number of stores per case")?
        .unwrap_or(1000);
    let kp = Keypair::from_secret(&[9; 32]);
    let towers = full_towers(&kp, stores);
    let size = towers[0].to_bytes().len();
    println!("tower store latency, {stores} stores per case, tower of 31 votes = {size} bytes");
    header();

    for members in [1usize, 3] {
        let cluster = EtcdCluster::start(members)?;
        let bare = bare_txn(&cluster, size, stores).await?;
        row(
            &format!("bare etcd-client txn, {members} member(s), mTLS"),
            &bare,
            "baseline",
        );
        let ours = etcd_stores(&cluster, &kp, &towers).await?;
        let ratio = ours.p50.as_secs_f64() / bare.p50.as_secs_f64();
        row(
            &format!("huione etcd store, {members} member(s), mTLS"),
            &ours,
            &format!("p50 overhead x{ratio:.2} over bare"),
        );
    }

    let dir = tempfile::tempdir()?;
    let files = FileTowerStorage::new(dir.path())?;
    let lease = files
        .acquire(
            &kp.pubkey(),
            LockOwner::for_this_process(kp.pubkey(), "bench"),
        )
        .await?;
    let mut samples = Vec::with_capacity(stores);
    for t in &towers {
        let start = Instant::now();
        files.store(&lease, t).await?;
        samples.push(start.elapsed());
    }
    row(
        "huione file store (fsync, rename, dir fsync)",
        &Summary::of(&mut samples),
        &dir.path().display().to_string(),
    );
    Ok(())
}

/// Towers as a busy validator writes them: 31 votes deep, one more vote each time.
fn full_towers(kp: &Keypair, n: usize) -> Vec<SavedTower> {
    let mut t = Tower::new(kp.pubkey());
    let mut out = Vec::with_capacity(n);
    let mut slot = 0;
    while out.len() < n {
        slot += 1;
        t.record_vote(slot, [slot as u8; 32], 1_700_000_000_000 + slot);
        if t.votes().len() == 31 {
            out.push(SavedTower::new(&t, kp).expect("own tower"));
        }
    }
    out
}

async fn etcd_stores(
    cluster: &EtcdCluster,
    kp: &Keypair,
    towers: &[SavedTower],
) -> anyhow::Result<Summary> {
    let tls = cluster.tls();
    let config = EtcdConfig::new(
        cluster.client_endpoints(),
        tls.ca_file,
        tls.cert_file,
        tls.key_file,
    );
    let storage = EtcdTowerStorage::connect(config).await?;
    let lease = storage
        .acquire(
            &kp.pubkey(),
            LockOwner::for_this_process(kp.pubkey(), "bench"),
        )
        .await?;
    for t in towers.iter().take(20) {
        storage.store(&lease, t).await?; // warm-up
    }
    let mut samples = Vec::with_capacity(towers.len());
    for t in towers {
        let start = Instant::now();
        storage.store(&lease, t).await?;
        samples.push(start.elapsed());
    }
    Ok(Summary::of(&mut samples))
}

/// The same-size write as one plain etcd-client transaction, no fencing, no retries.
async fn bare_txn(cluster: &EtcdCluster, size: usize, n: usize) -> anyhow::Result<Summary> {
    let tls = cluster.tls();
    let ca = std::fs::read(&tls.ca_file)?;
    let cert = std::fs::read(&tls.cert_file)?;
    let key = std::fs::read(&tls.key_file)?;
    let options = ConnectOptions::new()
        .with_tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(ca))
                .identity(Identity::from_pem(cert, key))
                .domain_name(tls.domain_name.clone()),
        )
        .with_timeout(Duration::from_secs(5));
    let endpoints: Vec<String> = cluster
        .client_endpoints()
        .iter()
        .map(|e| format!("https://{e}"))
        .collect();
    let mut client = Client::connect(endpoints, Some(options)).await?;
    let value = vec![7u8; size];
    for _ in 0..20 {
        client
            .txn(Txn::new().and_then(vec![TxnOp::put("/bench/bare", value.clone(), None)]))
            .await?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        client
            .txn(Txn::new().and_then(vec![TxnOp::put("/bench/bare", value.clone(), None)]))
            .await?;
        samples.push(start.elapsed());
    }
    Ok(Summary::of(&mut samples))
}
