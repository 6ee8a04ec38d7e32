//! Cluster tooling: genesis creation and the pieces of `huione-local-cluster` that need no
//! processes — its configuration and validation, the node plan and each node's command
//! line, the `cluster.json` manifest, port picking, status lines, and a minimal JSON-RPC
//! client. The binaries in `src/bin` are thin drivers around these.
//!
//! ```no_run
//! use huione_cluster::genesis::{build_genesis, parse_validator_spec, write_genesis, GenesisParams};
//! let v = parse_validator_spec("validator-keypair.json:vote-account-keypair.json:1000")?;
//! let genesis = build_genesis(vec![v], &GenesisParams::starting_in(3_000))?;
//! write_genesis(std::path::Path::new("genesis.json"), &genesis, false)?;
//! # Ok::<(), huione_cluster::genesis::GenesisToolError>(())
//! ```

pub mod config;
pub mod genesis;
pub mod manifest;
pub mod plan;
pub mod ports;
pub mod rpc_client;
pub mod status;

/// Writes `bytes` to `path` through a temporary file in the same directory, fsync and
/// rename, so readers see the old or the new content, never a torn one.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
