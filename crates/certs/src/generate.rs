//! Making certificates in memory: the CA, the etcd server and member certificates, client
//! certificates, and deliberately bad ones (expired, foreign CA) for negative tests.
//!
//! Keys are ECDSA P-256 (PKCS#8 PEM), which etcd, Go's TLS stack, rustls and OpenSSL accept.

use crate::CertError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::net::IpAddr;
use time::{Duration, OffsetDateTime};

/// Default lifetime of the etcd and validator certificates, in days.
pub const DEFAULT_DAYS: u32 = 365;
/// Default (and minimum, unless `--days` asks for more) lifetime of the CA, in days.
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Subject CN of the CA that [`generate`] makes.
pub const CA_COMMON_NAME: &str = "huione etcd CA";
/// Subject CN of the etcd server certificate (`etcd.pem`).
pub const ETCD_COMMON_NAME: &str = "etcd";
/// Subject CN of the validator client certificate (`validator.pem`).
pub const VALIDATOR_COMMON_NAME: &str = "validator";
/// Subject O of every certificate made here.
pub const ORGANIZATION: &str = "huione";

/// A certificate and its private key, both PEM text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertAndKey {
    /// `-----BEGIN CERTIFICATE-----` block.
    pub cert_pem: String,
    /// `-----BEGIN PRIVATE KEY-----` block (PKCS#8). Secret: write it with mode 0600.
    pub key_pem: String,
}

/// The time window in which a certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Valid from one hour before `now` (tolerates clock skew between machines) until
    /// `days` days after `now`.
    pub fn days_from(now: OffsetDateTime, days: u32) -> Self {
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(days)),
        }
    }

    /// [`Validity::days_from`] the current time.
    pub fn days(days: u32) -> Self {
        Self::days_from(OffsetDateTime::now_utc(), days)
    }

    /// A window that ended yesterday (began 30 days ago): for certificates that must be
    /// rejected as expired.
    pub fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
        }
    }

    fn check(&self, what: &str) -> Result<(), CertError> {
        if self.not_after <= self.not_before {
            return Err(CertError::InvalidValidity {
                what: what.to_string(),
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        Ok(())
    }
}

/// What [`generate`] makes: hosts for the SANs, number of per-member certificates, lifetimes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertOptions {
    /// DNS names and IP addresses clients use to reach etcd; they become the SANs of the
    /// etcd server and member certificates (IP addresses as IP SANs, names as DNS SANs).
    pub hosts: Vec<String>,
    /// Number of `etcd-member-<i>` certificates (0 for a single-node etcd using `etcd.pem`).
    pub members: usize,
    /// Lifetime of the etcd, member and validator certificates.
    pub validity: Validity,
    /// Lifetime of the CA (ignored by [`generate_with_ca`]).
    pub ca_validity: Validity,
}

impl CertOptions {
    /// Options for `hosts`, no member certificates, [`DEFAULT_DAYS`] / [`DEFAULT_CA_DAYS`].
    pub fn new<S: Into<String>>(hosts: impl IntoIterator<Item = S>) -> Self {
        CertOptions {
            hosts: hosts.into_iter().map(Into::into).collect(),
            members: 0,
            validity: Validity::days(DEFAULT_DAYS),
            ca_validity: Validity::days(DEFAULT_CA_DAYS),
        }
    }

    /// Also make `members` per-member certificates (`etcd-member-0` ..).
    pub fn with_members(mut self, members: usize) -> Self {
        self.members = members;
        self
    }

    /// Leaf certificates live `days` days; the CA lives at least as long and at least
    /// [`DEFAULT_CA_DAYS`].
    pub fn with_days(mut self, days: u32) -> Self {
        self.validity = Validity::days(days);
        self.ca_validity = Validity::days(days.max(DEFAULT_CA_DAYS));
        self
    }
}

/// One leaf certificate to issue with [`issue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafSpec {
    /// Subject CN.
    pub common_name: String,
    /// SANs (IP addresses become IP SANs, the rest DNS SANs). May be empty for clients.
    pub hosts: Vec<String>,
    /// Add extendedKeyUsage serverAuth.
    pub server_auth: bool,
    /// Add extendedKeyUsage clientAuth.
    pub client_auth: bool,
    pub validity: Validity,
}

impl LeafSpec {
    /// A client-only certificate (clientAuth, no SANs), like `validator.pem`.
    pub fn client(common_name: &str, validity: Validity) -> Self {
        LeafSpec {
            common_name: common_name.to_string(),
            hosts: Vec::new(),
            server_auth: false,
            client_auth: true,
            validity,
        }
    }

    /// A server certificate that is also a client certificate (serverAuth + clientAuth),
    /// like `etcd.pem` and the member certificates: etcd 3.4's gateway and its peers connect
    /// with the same certificate they serve.
    pub fn server(common_name: &str, hosts: &[String], validity: Validity) -> Self {
        LeafSpec {
            common_name: common_name.to_string(),
            hosts: hosts.to_vec(),
            server_auth: true,
            client_auth: true,
            validity,
        }
    }
}

/// Everything `huione-certs new` writes, in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedCerts {
    /// `etcd-ca.pem` / `etcd-ca-key.pem`.
    pub ca: CertAndKey,
    /// `etcd.pem` / `etcd-key.pem` (serverAuth + clientAuth, SANs = hosts).
    pub etcd: CertAndKey,
    /// `validator.pem` / `validator-key.pem` (clientAuth, CN "validator").
    pub validator: CertAndKey,
    /// `etcd-member-<i>.pem` / `etcd-member-<i>-key.pem` (serverAuth + clientAuth, SANs = hosts).
    pub members: Vec<CertAndKey>,
}

/// A CA nobody trusts and a client certificate it signed (see [`generate_foreign_ca_client`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignClient {
    pub ca: CertAndKey,
    pub client: CertAndKey,
}

/// Makes a new CA and, signed by it, the etcd server, validator client and member
/// certificates described by `opts`.
pub fn generate(opts: &CertOptions) -> Result<GeneratedCerts, CertError> {
    normalize_hosts(&opts.hosts)?;
    let ca = generate_ca(CA_COMMON_NAME, opts.ca_validity)?;
    generate_with_ca(ca, opts)
}

/// Like [`generate`], but signs with an existing CA (`--reuse-ca`), which is returned
/// unchanged in [`GeneratedCerts::ca`].
pub fn generate_with_ca(ca: CertAndKey, opts: &CertOptions) -> Result<GeneratedCerts, CertError> {
    let hosts = normalize_hosts(&opts.hosts)?;
    let etcd = issue(
        &ca,
        &LeafSpec::server(ETCD_COMMON_NAME, &hosts, opts.validity),
    )?;
    let validator = issue(&ca, &LeafSpec::client(VALIDATOR_COMMON_NAME, opts.validity))?;
    let members = (0..opts.members)
        .map(|i| {
            let name = format!("etcd-member-{i}");
            issue(&ca, &LeafSpec::server(&name, &hosts, opts.validity))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GeneratedCerts {
        ca,
        etcd,
        validator,
        members,
    })
}

/// Makes a self-signed CA: basicConstraints CA:true (path length 0), keyUsage keyCertSign,
/// cRLSign and digitalSignature.
pub fn generate_ca(common_name: &str, validity: Validity) -> Result<CertAndKey, CertError> {
    validity.check("the CA")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let key = KeyPair::generate().map_err(|e| CertError::generate("CA key", e))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| CertError::generate("CA", e))?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues one leaf certificate signed by `ca`: keyUsage digitalSignature + keyEncipherment,
/// the extended key usages and SANs of `spec`, a fresh P-256 key.
pub fn issue(ca: &CertAndKey, spec: &LeafSpec) -> Result<CertAndKey, CertError> {
    let what = format!("{:?}", spec.common_name);
    spec.validity.check(&what)?;
    let hosts = if spec.hosts.is_empty() {
        Vec::new()
    } else {
        normalize_hosts(&spec.hosts)?
    };
    let issuer = load_issuer(ca, "the CA given in memory")?;
    let mut params =
        CertificateParams::new(hosts).map_err(|e| CertError::generate(what.as_str(), e))?;
    params.distinguished_name = distinguished_name(&spec.common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    if spec.server_auth {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if spec.client_auth {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    params.use_authority_key_identifier_extension = true;
    params.not_before = spec.validity.not_before;
    params.not_after = spec.validity.not_after;
    let key = KeyPair::generate().map_err(|e| CertError::generate(format!("{what} key"), e))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| CertError::generate(what.as_str(), e))?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A client certificate (clientAuth, CN `common_name`) signed by `ca` with the given
/// validity; pass [`Validity::expired`] to get one that servers must reject.
pub fn generate_client_cert_with_validity(
    ca: &CertAndKey,
    common_name: &str,
    validity: Validity,
) -> Result<CertAndKey, CertError> {
    issue(ca, &LeafSpec::client(common_name, validity))
}

/// A client certificate signed by `ca` that expired yesterday. For negative tests: etcd
/// must refuse it during the TLS handshake.
pub fn generate_expired_client(
    ca: &CertAndKey,
    common_name: &str,
) -> Result<CertAndKey, CertError> {
    generate_client_cert_with_validity(ca, common_name, Validity::expired())
}

/// A fresh CA (CN "foreign CA", unrelated to any other) and a valid client certificate
/// it signed. For negative tests: an etcd that trusts only its own CA must refuse it.
pub fn generate_foreign_ca_client(common_name: &str) -> Result<ForeignClient, CertError> {
    let ca = generate_ca("foreign CA", Validity::days(DEFAULT_CA_DAYS))?;
    let client =
        generate_client_cert_with_validity(&ca, common_name, Validity::days(DEFAULT_DAYS))?;
    Ok(ForeignClient { ca, client })
}

/// Loads a CA certificate + key as an rcgen issuer, checking that they belong together.
/// `what` names their origin in errors.
pub(crate) fn load_issuer(
    ca: &CertAndKey,
    what: &str,
) -> Result<Issuer<'static, KeyPair>, CertError> {
    let bad = |detail: String| CertError::BadCa {
        what: what.to_string(),
        detail,
    };
    let key = KeyPair::from_pem(&ca.key_pem).map_err(|e| {
        bad(format!(
            "the key is not a PKCS#8 PEM private key ({e}); convert it with \
             `openssl pkcs8 -topk8 -nocrypt -in KEY -out etcd-ca-key.pem`"
        ))
    })?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca.cert_pem.as_bytes())
        .map_err(|e| bad(format!("the certificate is not PEM: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| bad(format!("the certificate is not valid X.509: {e}")))?;
    if !cert.is_ca() {
        return Err(bad(
            "the certificate is not a CA (basicConstraints CA:false or missing)".to_string(),
        ));
    }
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(bad(
            "the private key does not belong to the certificate".to_string()
        ));
    }
    Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(|e| bad(e.to_string()))
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn
}

/// Trims, drops empty entries and duplicates, and checks each host is an IP address or a
/// DNS name (not a URL, not `host:port`).
pub fn normalize_hosts(hosts: &[String]) -> Result<Vec<String>, CertError> {
    let mut out: Vec<String> = Vec::new();
    for host in hosts.iter().map(|h| h.trim()).filter(|h| !h.is_empty()) {
        check_host(host)?;
        if !out.iter().any(|h| h == host) {
            out.push(host.to_string());
        }
    }
    if out.is_empty() {
        return Err(CertError::NoHosts);
    }
    Ok(out)
}

fn check_host(host: &str) -> Result<(), CertError> {
    let invalid = |reason: &str| CertError::InvalidHost {
        host: host.to_string(),
        reason: reason.to_string(),
    };
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.contains("://") {
        return Err(invalid("a URL, not a host name"));
    }
    if host.contains(':') {
        return Err(invalid(
            "contains ':' (give the host without a port; IPv6 addresses without brackets)",
        ));
    }
    if host.len() > 253 {
        return Err(invalid("longer than 253 characters"));
    }
    let labels: Vec<&str> = host.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("empty or over-long name part between dots"));
        }
        if *label == "*" && i == 0 && labels.len() > 1 {
            continue;
        }
        let ok_chars = label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok_chars || label.starts_with('-') || label.ends_with('-') {
            return Err(invalid(
                "only letters, digits, '-' and '_' are allowed in a DNS name",
            ));
        }
    }
    Ok(())
}
