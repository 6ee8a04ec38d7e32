//! Reading certificates back for `huione-certs show`: subject, SANs, usages and expiry.

use crate::CertError;
use std::fmt::Write as _;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;
use x509_parser::prelude::X509Certificate;

/// Certificates expiring within this many days are flagged by `show` (and warned about by
/// the validator): time to run `huione-certs renew`.
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// What `show` prints about one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// File the certificate was read from.
    pub path: PathBuf,
    /// Subject common name ("" if none).
    pub subject_cn: String,
    /// Issuer common name ("" if none).
    pub issuer_cn: String,
    /// Serial number, hex with ':' separators.
    pub serial: String,
    /// SANs as "DNS:name" / "IP:addr" (other kinds as x509-parser prints them).
    pub sans: Vec<String>,
    /// basicConstraints CA:true.
    pub is_ca: bool,
    /// keyUsage names, e.g. "digitalSignature", "keyCertSign".
    pub key_usages: Vec<String>,
    /// extendedKeyUsage names, e.g. "serverAuth", "clientAuth".
    pub extended_key_usages: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl CertInfo {
    /// Whole days from `now` until expiry (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }

    /// Expired at `now` (or not yet valid is reported separately by [`CertInfo::not_yet_valid`]).
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now > self.not_after
    }

    /// Valid at `now` but expiring within [`RENEW_BEFORE_DAYS`] days.
    pub fn expires_soon(&self, now: OffsetDateTime) -> bool {
        !self.is_expired(now) && self.days_left(now) < RENEW_BEFORE_DAYS
    }

    /// `now` is before not_before.
    pub fn not_yet_valid(&self, now: OffsetDateTime) -> bool {
        now < self.not_before
    }

    /// "expires in N days", "EXPIRED N days ago" or "NOT YET VALID".
    pub fn expiry_status(&self, now: OffsetDateTime) -> String {
        if self.is_expired(now) {
            format!("EXPIRED {} days ago", (now - self.not_after).whole_days())
        } else if self.not_yet_valid(now) {
            format!("NOT YET VALID (valid from {})", utc(self.not_before))
        } else {
            let text = match self.days_left(now) {
                1 => "expires in 1 day".to_string(),
                n => format!("expires in {n} days"),
            };
            if self.expires_soon(now) {
                format!("{text}: RENEW SOON with `huione-certs renew`")
            } else {
                text
            }
        }
    }

    /// A multi-line human description, as `huione-certs show` prints it.
    pub fn describe(&self, now: OffsetDateTime) -> String {
        let none = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.path.display());
        let _ = writeln!(out, "  subject CN: {}", self.subject_cn);
        let _ = writeln!(out, "  issuer CN:  {}", self.issuer_cn);
        let _ = writeln!(
            out,
            "  CA:         {}",
            if self.is_ca { "yes" } else { "no" }
        );
        let _ = writeln!(out, "  SANs:       {}", none(&self.sans));
        let _ = writeln!(out, "  key usage:  {}", none(&self.key_usages));
        let _ = writeln!(out, "  ext. usage: {}", none(&self.extended_key_usages));
        let _ = writeln!(out, "  not before: {}", utc(self.not_before));
        let _ = writeln!(
            out,
            "  not after:  {} ({})",
            utc(self.not_after),
            self.expiry_status(now)
        );
        out
    }
}

/// `2026-01-31 12:00:00 UTC`.
pub fn utc(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Reads every certificate in the PEM file `path` (a bundle gives several).
///
/// Errors name the file: missing, not PEM, PEM without a certificate (a key file), or a
/// certificate that is not valid X.509.
pub fn inspect(path: &Path) -> Result<Vec<CertInfo>, CertError> {
    let bytes = fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CertError::NotFound {
            path: path.to_path_buf(),
            hint: "check the path, or create the certificates with `huione-certs new --dir DIR`"
                .to_string(),
        },
        _ => CertError::io("read", path, e),
    })?;
    let blocks = pem_blocks(path, &bytes)?;
    let mut infos = Vec::new();
    for block in blocks.iter().filter(|b| b.label == "CERTIFICATE") {
        let cert = block.parse_x509().map_err(|e| CertError::BadCertificate {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        infos.push(info(path, &cert));
    }
    if infos.is_empty() {
        let labels: Vec<&str> = blocks.iter().map(|b| b.label.as_str()).collect();
        return Err(CertError::NoCertificate {
            path: path.to_path_buf(),
            labels: labels.join(", "),
        });
    }
    Ok(infos)
}

/// Reads every certificate file (`*.pem` holding a CERTIFICATE block) in `dir`, sorted by
/// file name; key files are skipped. Errors if `dir` is missing or holds no certificate.
pub fn inspect_dir(dir: &Path) -> Result<Vec<CertInfo>, CertError> {
    let entries = fs::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CertError::NotFound {
            path: dir.to_path_buf(),
            hint: format!(
                "create the certificates with `huione-certs new --dir {}`",
                dir.display()
            ),
        },
        _ => CertError::io("list directory", dir, e),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pem") && p.is_file())
        .collect();
    files.sort();
    let mut infos = Vec::new();
    for file in files {
        match inspect(&file) {
            Ok(found) => infos.extend(found),
            // Keys and other non-certificate PEM files are expected in the directory.
            Err(CertError::NoCertificate { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    if infos.is_empty() {
        return Err(CertError::NoCertificatesInDir {
            dir: dir.to_path_buf(),
        });
    }
    Ok(infos)
}

fn pem_blocks(path: &Path, bytes: &[u8]) -> Result<Vec<Pem>, CertError> {
    let not_pem = |detail: String| CertError::NotPem {
        path: path.to_path_buf(),
        detail,
    };
    let blocks = Pem::iter_from_buffer(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(e.to_string()))?;
    if blocks.is_empty() {
        return Err(not_pem("no PEM block found".to_string()));
    }
    Ok(blocks)
}

fn info(path: &Path, cert: &X509Certificate<'_>) -> CertInfo {
    let cn = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let sans = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext.value.general_names.iter().map(san_string).collect(),
        _ => Vec::new(),
    };
    let mut key_usages = Vec::new();
    if let Ok(Some(ku)) = cert.key_usage() {
        let ku = ku.value;
        let names = [
            (ku.digital_signature(), "digitalSignature"),
            (ku.non_repudiation(), "nonRepudiation"),
            (ku.key_encipherment(), "keyEncipherment"),
            (ku.data_encipherment(), "dataEncipherment"),
            (ku.key_agreement(), "keyAgreement"),
            (ku.key_cert_sign(), "keyCertSign"),
            (ku.crl_sign(), "cRLSign"),
            (ku.encipher_only(), "encipherOnly"),
            (ku.decipher_only(), "decipherOnly"),
        ];
        key_usages = names
            .iter()
            .filter(|(set, _)| *set)
            .map(|(_, n)| n.to_string())
            .collect();
    }
    let mut extended_key_usages = Vec::new();
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let eku = eku.value;
        let names = [
            (eku.any, "any"),
            (eku.server_auth, "serverAuth"),
            (eku.client_auth, "clientAuth"),
            (eku.code_signing, "codeSigning"),
            (eku.email_protection, "emailProtection"),
            (eku.time_stamping, "timeStamping"),
            (eku.ocsp_signing, "OCSPSigning"),
        ];
        extended_key_usages = names
            .iter()
            .filter(|(set, _)| *set)
            .map(|(_, n)| n.to_string())
            .collect();
        extended_key_usages.extend(eku.other.iter().map(|oid| oid.to_id_string()));
    }
    CertInfo {
        path: path.to_path_buf(),
        subject_cn: cn(cert.subject()),
        issuer_cn: cn(cert.issuer()),
        serial: cert.raw_serial_as_string(),
        sans,
        is_ca: cert.is_ca(),
        key_usages,
        extended_key_usages,
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
    }
}

fn san_string(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(dns) => format!("DNS:{dns}"),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => {
                let octets: [u8; 4] = (*bytes).try_into().unwrap_or_default();
                format!("IP:{}", IpAddr::from(octets))
            }
            16 => {
                let octets: [u8; 16] = (*bytes).try_into().unwrap_or_default();
                format!("IP:{}", IpAddr::from(octets))
            }
            _ => format!("IP:{bytes:02x?}"),
        },
        other => other.to_string(),
    }
}
