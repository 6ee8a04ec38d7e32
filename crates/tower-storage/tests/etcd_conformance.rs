//! The conformance suite against a real etcd over mutual TLS (one member per test,
//! started by huione-testkit).

use huione_keys::Pubkey;
use huione_testkit::EtcdCluster;
use huione_tower_storage::conformance::Fixture;
use huione_tower_storage::{EtcdConfig, EtcdTowerStorage};

struct Etcd {
    cluster: EtcdCluster,
    config: EtcdConfig,
}

impl Etcd {
    fn start() -> Etcd {
        let cluster = EtcdCluster::start(1).expect("start etcd (is etcd installed?)");
        let tls = cluster.tls();
        let mut config = EtcdConfig::new(
            cluster.client_endpoints(),
            tls.ca_file,
            tls.cert_file,
            tls.key_file,
        );
        config.domain_name = tls.domain_name;
        Etcd { cluster, config }
    }
}

impl Fixture for Etcd {
    type Storage = EtcdTowerStorage;

    async fn open(&self) -> EtcdTowerStorage {
        EtcdTowerStorage::connect(self.config.clone())
            .await
            .expect("connect to the test etcd")
    }

    async fn put_raw_tower(&self, identity: &Pubkey, bytes: &[u8]) {
        // A raw client, bypassing the lock: what an operator (or an attacker) with etcd
        // access could do.
        let tls = self.cluster.tls();
        let options = etcd_client::ConnectOptions::new().with_tls(
            etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(
                    std::fs::read(&tls.ca_file).unwrap(),
                ))
                .identity(etcd_client::Identity::from_pem(
                    std::fs::read(&tls.cert_file).unwrap(),
                    std::fs::read(&tls.key_file).unwrap(),
                ))
                .domain_name(tls.domain_name.clone()),
        );
        let mut client = etcd_client::Client::connect(self.cluster.client_urls(), Some(options))
            .await
            .unwrap();
        let key = format!("{}/tower/{identity}", self.config.prefix);
        client.put(key, bytes.to_vec(), None).await.unwrap();
    }

    async fn compact_history(&self) {
        // Through the storage's own compaction, to the current revision (nothing kept).
        let storage = self.open().await;
        let compacted = storage
            .compact(0)
            .await
            .expect("compact")
            .expect("there are revisions to compact");
        assert_eq!(storage.compacted_revision(), compacted);
        // Reading below it must now fail: the old revisions are really gone.
        let err = self
            .cluster
            .etcdctl(&["get", "--rev", &(compacted - 1).to_string(), "/huione/"])
            .expect_err("a read below the compaction revision must fail");
        assert!(
            format!("{err:#}").contains("compacted"),
            "unexpected error: {err:#}"
        );
    }
}

huione_tower_storage::conformance_tests!(Etcd::start());
