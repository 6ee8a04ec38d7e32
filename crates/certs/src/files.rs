//! The certificate files on disk: their names (the seed's), writing them safely (never
//! overwriting without `force`, keys mode 0600, fsync + rename) and reading a CA back.

use crate::{CertAndKey, CertError, GeneratedCerts};
use std::fs;
use std::path::{Path, PathBuf};

/// CA certificate file name.
pub const CA_CERT_FILE: &str = "etcd-ca.pem";
/// CA private key file name.
pub const CA_KEY_FILE: &str = "etcd-ca-key.pem";
/// etcd server certificate file name.
pub const ETCD_CERT_FILE: &str = "etcd.pem";
/// etcd server private key file name.
pub const ETCD_KEY_FILE: &str = "etcd-key.pem";
/// Validator client certificate file name.
pub const VALIDATOR_CERT_FILE: &str = "validator.pem";
/// Validator client private key file name.
pub const VALIDATOR_KEY_FILE: &str = "validator-key.pem";

/// File name of member `i`'s certificate: `etcd-member-<i>.pem`.
pub fn member_cert_file(i: usize) -> String {
    format!("etcd-member-{i}.pem")
}

/// File name of member `i`'s private key: `etcd-member-<i>-key.pem`.
pub fn member_key_file(i: usize) -> String {
    format!("etcd-member-{i}-key.pem")
}

/// Where one certificate and its key live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The paths of every file `huione-certs new` writes into a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPaths {
    pub dir: PathBuf,
    /// `etcd-ca.pem`, `etcd-ca-key.pem`
    pub ca: FilePair,
    /// `etcd.pem`, `etcd-key.pem`
    pub etcd: FilePair,
    /// `validator.pem`, `validator-key.pem`
    pub validator: FilePair,
    /// `etcd-member-<i>.pem`, `etcd-member-<i>-key.pem`
    pub members: Vec<FilePair>,
}

impl CertPaths {
    /// The standard file names in `dir`, with `members` member pairs.
    pub fn in_dir(dir: &Path, members: usize) -> Self {
        let pair = |cert: &str, key: &str| FilePair {
            cert: dir.join(cert),
            key: dir.join(key),
        };
        CertPaths {
            dir: dir.to_path_buf(),
            ca: pair(CA_CERT_FILE, CA_KEY_FILE),
            etcd: pair(ETCD_CERT_FILE, ETCD_KEY_FILE),
            validator: pair(VALIDATOR_CERT_FILE, VALIDATOR_KEY_FILE),
            members: (0..members)
                .map(|i| pair(&member_cert_file(i), &member_key_file(i)))
                .collect(),
        }
    }

    /// All pairs, CA first.
    pub fn pairs(&self) -> Vec<&FilePair> {
        let mut pairs = vec![&self.ca, &self.etcd, &self.validator];
        pairs.extend(self.members.iter());
        pairs
    }

    /// Every file path, CA first.
    pub fn all_files(&self) -> Vec<&Path> {
        self.pairs()
            .into_iter()
            .flat_map(|p| [p.cert.as_path(), p.key.as_path()])
            .collect()
    }
}

/// Writes `certs` into `dir` (created with mode 0700 if missing) under the standard names.
///
/// Checks every target first: if any exists with different content and `force` is false,
/// returns [`CertError::Exists`] naming it and writes nothing. A file whose content is
/// already exactly what would be written is left alone (so a reused CA is not an
/// "overwrite"). Keys get mode 0600, certificates 0644; each file is written to a temp
/// file, fsynced and renamed into place, then the directory is fsynced.
pub fn write(dir: &Path, certs: &GeneratedCerts, force: bool) -> Result<CertPaths, CertError> {
    let paths = CertPaths::in_dir(dir, certs.members.len());
    let mut items: Vec<(&Path, &str, bool)> = vec![
        (&paths.ca.cert, &certs.ca.cert_pem, false),
        (&paths.ca.key, &certs.ca.key_pem, true),
        (&paths.etcd.cert, &certs.etcd.cert_pem, false),
        (&paths.etcd.key, &certs.etcd.key_pem, true),
        (&paths.validator.cert, &certs.validator.cert_pem, false),
        (&paths.validator.key, &certs.validator.key_pem, true),
    ];
    for (pair, member) in paths.members.iter().zip(&certs.members) {
        items.push((&pair.cert, &member.cert_pem, false));
        items.push((&pair.key, &member.key_pem, true));
    }

    let mut to_write = Vec::new();
    for (path, content, secret) in items {
        match fs::read(path) {
            Ok(existing) if existing == content.as_bytes() => continue,
            Ok(_) if !force => {
                return Err(CertError::Exists {
                    path: path.to_path_buf(),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CertError::io("read", path, e)),
        }
        to_write.push((path, content, secret));
    }

    create_dir(dir)?;
    for (path, content, secret) in to_write {
        write_file(path, content.as_bytes(), if secret { 0o600 } else { 0o644 })?;
    }
    Ok(paths)
}

/// Reads a certificate and key pair from disk.
pub fn read_pair(pair: &FilePair) -> Result<CertAndKey, CertError> {
    Ok(CertAndKey {
        cert_pem: read_text(&pair.cert)?,
        key_pem: read_text(&pair.key)?,
    })
}

/// Reads `etcd-ca.pem` + `etcd-ca-key.pem` from `dir` and checks they form a usable CA.
pub fn read_ca(dir: &Path) -> Result<CertAndKey, CertError> {
    let paths = CertPaths::in_dir(dir, 0);
    let ca = read_pair(&paths.ca)?;
    let what = format!("{} + {}", paths.ca.cert.display(), paths.ca.key.display());
    crate::generate::load_issuer(&ca, &what)?;
    Ok(ca)
}

fn read_text(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CertError::NotFound {
            path: path.to_path_buf(),
            hint: "create the certificates with `huione-certs new --dir DIR`".to_string(),
        },
        _ => CertError::io("read", path, e),
    })
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| CertError::io("create directory", dir, e))
}

fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<(), CertError> {
    huione_os::fs::write_atomic_with(path, content, huione_os::fs::WriteOptions::mode(mode))
        .map_err(|e| CertError::io("write", path, e))
}
