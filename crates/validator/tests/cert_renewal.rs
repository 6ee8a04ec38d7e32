//! Certificates renewed under a running primary (real process, real etcd over mutual TLS):
//! `huione-certs renew`'s library call replaces the files, SIGHUP makes the validator
//! connect with them, and it keeps voting without withholding a vote.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::time::Duration;

use common::*;
use faults::*;
use huione_testkit::EtcdCluster;

#[test]
fn certificates_renewed_under_a_running_primary_are_loaded_on_sighup_without_a_missed_vote() {
    let _serial = serial();
    let etcd = EtcdCluster::start(1).unwrap();
    let (mut c, _standby) = pair_cluster(&etcd, &[]);
    c.start_all();
    wait_voting(&c, Duration::from_secs(60));
    let vote = vote_account(&c);
    let primary = &c.nodes[PAIR];
    let old_left = wait_for(Duration::from_secs(30), || {
        metric(primary, "huione_tls_client_cert_expiry_seconds").filter(|v| *v > 0.0)
    })
    .expect("client certificate expiry metric");
    assert!(old_left < 366.0 * 86_400.0, "{old_left}");
    let withheld_before = metric(primary, "huione_votes_withheld_total").unwrap_or(0.0);

    // What `huione-certs renew --dir certs --days 500` does.
    let dir = etcd.certs_dir().to_path_buf();
    let old_cert = std::fs::read(dir.join("validator.pem")).unwrap();
    let ca = huione_certs::read_ca(&dir).unwrap();
    let opts = huione_certs::CertOptions::new(["localhost", "127.0.0.1"]).with_days(500);
    let renewed = huione_certs::generate_with_ca(ca, &opts).unwrap();
    huione_certs::write(&dir, &renewed, true).unwrap();
    assert_ne!(std::fs::read(dir.join("validator.pem")).unwrap(), old_cert);

    primary.signal(libc::SIGHUP);
    let reloaded = wait_for(Duration::from_secs(20), || {
        primary
            .log()
            .contains("certificates reloaded (SIGHUP)")
            .then_some(())
    });
    assert!(
        reloaded.is_some(),
        "no reload logged:\n{}",
        tail(&primary.log(), 40)
    );
    // The metric follows the new file (at the next poll, within 10 s).
    let new_left = wait_for(Duration::from_secs(30), || {
        metric(primary, "huione_tls_client_cert_expiry_seconds").filter(|v| *v > 499.0 * 86_400.0)
    });
    assert!(
        new_left.is_some(),
        "the expiry metric did not move to the new certificate"
    );

    // Still voting over the new connections, and no vote was withheld.
    let before = last_vote_of(&c.nodes[0], &vote).unwrap_or(0);
    assert!(
        wait_vote_past(&c.nodes[0], &vote, before + 20, Duration::from_secs(60)).is_some(),
        "the primary stopped voting:\n{}",
        tail(&primary.log(), 40)
    );
    assert_eq!(
        metric(primary, "huione_votes_withheld_total").unwrap_or(0.0),
        withheld_before,
        "votes were withheld during the renewal"
    );
    assert!(primary
        .log()
        .contains("reloaded the etcd client certificate"));
}
