//! Unit tests: what the generated certificates contain, how files are written, and errors.

use super::*;
use std::path::Path;
use time::{Duration, OffsetDateTime};

fn hosts() -> CertOptions {
    CertOptions::new(["localhost", "127.0.0.1", "::1", "etcd.example"])
}

fn info_of(dir: &Path, file: &str) -> CertInfo {
    let mut infos = inspect(&dir.join(file)).unwrap();
    assert_eq!(infos.len(), 1);
    infos.remove(0)
}

fn written(members: usize) -> (tempfile::TempDir, CertPaths) {
    let dir = tempfile::tempdir().unwrap();
    let certs = generate(&hosts().with_members(members)).unwrap();
    let paths = write(dir.path(), &certs, false).unwrap();
    (dir, paths)
}

#[test]
fn ca_is_a_proper_ca() {
    let (dir, _) = written(0);
    let ca = info_of(dir.path(), CA_CERT_FILE);
    assert!(ca.is_ca);
    assert_eq!(ca.subject_cn, CA_COMMON_NAME);
    assert_eq!(ca.issuer_cn, CA_COMMON_NAME);
    assert!(ca.key_usages.contains(&"keyCertSign".to_string()));
    assert!(ca.key_usages.contains(&"cRLSign".to_string()));
}

#[test]
fn etcd_cert_is_server_and_client_with_ip_and_dns_sans() {
    let (dir, _) = written(0);
    let etcd = info_of(dir.path(), ETCD_CERT_FILE);
    assert!(!etcd.is_ca);
    assert_eq!(etcd.issuer_cn, CA_COMMON_NAME);
    assert_eq!(
        etcd.sans,
        [
            "DNS:localhost",
            "IP:127.0.0.1",
            "IP:::1",
            "DNS:etcd.example"
        ]
    );
    assert_eq!(etcd.extended_key_usages, ["serverAuth", "clientAuth"]);
    assert_eq!(etcd.key_usages, ["digitalSignature", "keyEncipherment"]);
}

#[test]
fn validator_cert_is_client_only() {
    let (dir, _) = written(0);
    let v = info_of(dir.path(), VALIDATOR_CERT_FILE);
    assert_eq!(v.subject_cn, "validator");
    assert_eq!(v.extended_key_usages, ["clientAuth"]);
    assert!(v.sans.is_empty());
    assert!(!v.is_ca);
}

#[test]
fn member_certs_have_both_usages_and_the_sans() {
    let (dir, paths) = written(3);
    assert_eq!(paths.members.len(), 3);
    for i in 0..3 {
        let m = info_of(dir.path(), &member_cert_file(i));
        assert_eq!(m.subject_cn, format!("etcd-member-{i}"));
        assert_eq!(m.extended_key_usages, ["serverAuth", "clientAuth"]);
        assert_eq!(m.sans.len(), 4);
        assert!(dir.path().join(member_key_file(i)).is_file());
    }
    assert!(!dir.path().join(member_cert_file(3)).exists());
}

#[test]
fn leaf_expiry_follows_days_and_ca_outlives_it() {
    let certs = generate(&hosts().with_days(30)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &certs, false).unwrap();
    let now = OffsetDateTime::now_utc();
    let etcd = info_of(dir.path(), ETCD_CERT_FILE);
    assert!(
        (29..=30).contains(&etcd.days_left(now)),
        "{}",
        etcd.days_left(now)
    );
    assert_eq!(
        etcd.expiry_status(now),
        // Under 30 days left: flagged for renewal.
        format!(
            "expires in {} days: RENEW SOON with `huione-certs renew`",
            etcd.days_left(now)
        )
    );
    let ca = info_of(dir.path(), CA_CERT_FILE);
    assert!(ca.days_left(now) >= i64::from(DEFAULT_CA_DAYS) - 1);
}

#[cfg(unix)]
#[test]
fn keys_are_0600_and_certs_0644() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, paths) = written(2);
    for pair in paths.pairs() {
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&pair.key), 0o600, "{}", pair.key.display());
        assert_eq!(mode(&pair.cert), 0o644, "{}", pair.cert.display());
    }
}

#[test]
fn write_refuses_to_overwrite_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Only the last target exists: every other file must stay absent after the refusal.
    let last = dir.path().join(member_key_file(1));
    std::fs::write(&last, "old").unwrap();
    let certs = generate(&hosts().with_members(2)).unwrap();
    let err = write(dir.path(), &certs, false).unwrap_err();
    match &err {
        CertError::Exists { path } => assert_eq!(path, &last),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_eq!(std::fs::read_to_string(&last).unwrap(), "old");
}

#[test]
fn write_with_force_replaces_everything() {
    let (dir, paths) = written(0);
    let old_ca = std::fs::read_to_string(&paths.ca.cert).unwrap();
    let certs = generate(&hosts()).unwrap();
    write(dir.path(), &certs, true).unwrap();
    let new_ca = std::fs::read_to_string(&paths.ca.cert).unwrap();
    assert_ne!(old_ca, new_ca);
    assert_eq!(new_ca, certs.ca.cert_pem);
}

#[test]
fn reused_ca_is_kept_and_signs_the_new_leaves() {
    let (dir, paths) = written(0);
    let ca = read_ca(dir.path()).unwrap();
    let certs = generate_with_ca(ca.clone(), &hosts().with_members(1)).unwrap();
    assert_eq!(certs.ca, ca);
    // The CA files are unchanged, so they are not an overwrite; the leaves are.
    let err = write(dir.path(), &certs, false).unwrap_err();
    assert!(
        matches!(err, CertError::Exists { ref path } if path == &paths.etcd.cert),
        "{err}"
    );
    for pair in paths.pairs().iter().skip(1) {
        std::fs::remove_file(&pair.cert).unwrap();
        std::fs::remove_file(&pair.key).unwrap();
    }
    write(dir.path(), &certs, false).unwrap();
    assert_eq!(
        std::fs::read_to_string(&paths.ca.cert).unwrap(),
        ca.cert_pem
    );
    let member = info_of(dir.path(), &member_cert_file(0));
    assert_eq!(member.issuer_cn, CA_COMMON_NAME);
    // Same subject and key id as the CA: the AKI of the leaf names the CA's SKI.
    assert_aki_matches_ski(&certs.etcd.cert_pem, &ca.cert_pem);
}

fn assert_aki_matches_ski(leaf_pem: &str, ca_pem: &str) {
    use x509_parser::extensions::ParsedExtension;
    let (_, leaf) = x509_parser::pem::parse_x509_pem(leaf_pem.as_bytes()).unwrap();
    let (_, ca) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).unwrap();
    let leaf = leaf.parse_x509().unwrap();
    let ca = ca.parse_x509().unwrap();
    let aki = leaf
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.clone(),
            _ => None,
        })
        .expect("leaf has an AKI");
    let ski = ca
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.clone()),
            _ => None,
        })
        .expect("CA has an SKI");
    assert_eq!(aki.0, ski.0);
    assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
}

#[test]
fn leaves_chain_to_their_ca() {
    let certs = generate(&hosts()).unwrap();
    assert_aki_matches_ski(&certs.etcd.cert_pem, &certs.ca.cert_pem);
    assert_aki_matches_ski(&certs.validator.cert_pem, &certs.ca.cert_pem);
    let (_, leaf) = x509_parser::pem::parse_x509_pem(certs.validator.cert_pem.as_bytes()).unwrap();
    let (_, ca) = x509_parser::pem::parse_x509_pem(certs.ca.cert_pem.as_bytes()).unwrap();
    let ca = ca.parse_x509().unwrap();
    leaf.parse_x509()
        .unwrap()
        .verify_signature(Some(ca.public_key()))
        .expect("signed by the CA");
}

#[test]
fn read_ca_rejects_a_key_that_does_not_match() {
    let (dir, paths) = written(0);
    let other = generate(&hosts()).unwrap();
    std::fs::write(&paths.ca.key, &other.ca.key_pem).unwrap();
    let err = read_ca(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("does not belong"), "{msg}");
    assert!(msg.contains(CA_CERT_FILE), "{msg}");
}

#[test]
fn read_ca_rejects_a_leaf_as_ca() {
    let certs = generate(&hosts()).unwrap();
    let err = generate_with_ca(certs.etcd.clone(), &hosts()).unwrap_err();
    assert!(err.to_string().contains("not a CA"), "{err}");
}

#[test]
fn expired_client_is_expired_and_signed_by_the_ca() {
    let certs = generate(&hosts()).unwrap();
    let expired = generate_expired_client(&certs.ca, "old").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.pem");
    std::fs::write(&path, &expired.cert_pem).unwrap();
    let info = inspect(&path).unwrap().remove(0);
    let now = OffsetDateTime::now_utc();
    assert!(info.is_expired(now));
    assert!(
        info.expiry_status(now).starts_with("EXPIRED"),
        "{}",
        info.expiry_status(now)
    );
    assert_eq!(info.issuer_cn, CA_COMMON_NAME);
    assert_eq!(info.extended_key_usages, ["clientAuth"]);
}

#[test]
fn custom_validity_window_is_used() {
    let certs = generate(&hosts()).unwrap();
    let now = OffsetDateTime::now_utc();
    let validity = Validity {
        not_before: now + Duration::days(10),
        not_after: now + Duration::days(20),
    };
    let c = generate_client_cert_with_validity(&certs.ca, "future", validity).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.pem");
    std::fs::write(&path, &c.cert_pem).unwrap();
    let info = inspect(&path).unwrap().remove(0);
    assert!(info.not_yet_valid(now));
    assert!(info.expiry_status(now).starts_with("NOT YET VALID"));
    let bad = Validity {
        not_before: now,
        not_after: now - Duration::days(1),
    };
    let err = generate_client_cert_with_validity(&certs.ca, "x", bad).unwrap_err();
    assert!(matches!(err, CertError::InvalidValidity { .. }), "{err}");
}

#[test]
fn foreign_client_is_signed_by_another_ca() {
    let ours = generate(&hosts()).unwrap();
    let foreign = generate_foreign_ca_client("validator").unwrap();
    assert_ne!(foreign.ca.cert_pem, ours.ca.cert_pem);
    assert_aki_matches_ski(&foreign.client.cert_pem, &foreign.ca.cert_pem);
    let (_, leaf) = x509_parser::pem::parse_x509_pem(foreign.client.cert_pem.as_bytes()).unwrap();
    let (_, ca) = x509_parser::pem::parse_x509_pem(ours.ca.cert_pem.as_bytes()).unwrap();
    let ca = ca.parse_x509().unwrap();
    assert!(leaf
        .parse_x509()
        .unwrap()
        .verify_signature(Some(ca.public_key()))
        .is_err());
}

#[test]
fn hosts_are_validated() {
    assert!(matches!(
        generate(&CertOptions::new(Vec::<String>::new())),
        Err(CertError::NoHosts)
    ));
    assert!(matches!(
        generate(&CertOptions::new([" ", ""])),
        Err(CertError::NoHosts)
    ));
    for bad in [
        "https://etcd",
        "etcd:2379",
        "bad host",
        "-x.example",
        "a..b",
    ] {
        let err = generate(&CertOptions::new([bad])).unwrap_err();
        assert!(matches!(err, CertError::InvalidHost { .. }), "{bad}: {err}");
        assert!(err.to_string().contains(bad), "{err}");
    }
    let ok = normalize_hosts(&[
        " localhost ".into(),
        "localhost".into(),
        "*.etcd.example".into(),
        "fe80::1".into(),
    ])
    .unwrap();
    assert_eq!(ok, ["localhost", "*.etcd.example", "fe80::1"]);
}

#[test]
fn inspect_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let err = inspect(&missing).unwrap_err();
    assert!(matches!(err, CertError::NotFound { .. }));
    assert!(err.to_string().contains("nope.pem"), "{err}");

    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "hello, not a certificate\n").unwrap();
    let err = inspect(&junk).unwrap_err();
    assert!(matches!(err, CertError::NotPem { .. }), "{err:?}");
    assert!(err.to_string().contains("junk.pem"), "{err}");

    let certs = generate(&hosts()).unwrap();
    let key = dir.path().join("k-key.pem");
    std::fs::write(&key, &certs.ca.key_pem).unwrap();
    let err = inspect(&key).unwrap_err();
    assert!(matches!(err, CertError::NoCertificate { .. }), "{err:?}");
    assert!(err.to_string().contains("PRIVATE KEY"), "{err}");

    let garbled = dir.path().join("garbled.pem");
    std::fs::write(
        &garbled,
        "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = inspect(&garbled).unwrap_err();
    assert!(matches!(err, CertError::BadCertificate { .. }), "{err:?}");
}

#[test]
fn inspect_dir_lists_certs_and_skips_keys() {
    let (dir, _) = written(1);
    let infos = inspect_dir(dir.path()).unwrap();
    let names: Vec<String> = infos
        .iter()
        .map(|i| i.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "etcd-ca.pem",
            "etcd-member-0.pem",
            "etcd.pem",
            "validator.pem"
        ]
    );
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        inspect_dir(empty.path()),
        Err(CertError::NoCertificatesInDir { .. })
    ));
    assert!(matches!(
        inspect_dir(&empty.path().join("missing")),
        Err(CertError::NotFound { .. })
    ));
}

#[test]
fn bundle_file_yields_every_certificate() {
    let certs = generate(&hosts()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(
        &bundle,
        format!("{}{}", certs.etcd.cert_pem, certs.ca.cert_pem),
    )
    .unwrap();
    let infos = inspect(&bundle).unwrap();
    assert_eq!(infos.len(), 2);
    assert!(infos[0]
        .describe(OffsetDateTime::now_utc())
        .contains("subject CN: etcd"));
}

#[test]
fn write_creates_missing_dir_with_mode_0700() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a/certs");
    write(&target, &generate(&hosts()).unwrap(), false).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
    // No temp files left behind.
    let leftovers = std::fs::read_dir(&target)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(leftovers, 0);
}
