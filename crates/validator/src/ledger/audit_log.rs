//! The audit log: one JSON line per vote sent and block produced, durable before it leaves.
//!
//! ```text
//! <ledger>/audit.jsonl               the segment being written
//! <ledger>/audit-<seq:06>.jsonl      rotated segments, oldest = lowest seq
//! ```
//!
//! Records are appended with `write`, and [`AuditLog::sync`] (one fdatasync) makes every
//! record appended so far durable; the node syncs once per batch of commands, before any
//! vote or block of the batch is sent. When the current segment passes its size bound it
//! is renamed to the next `audit-<seq>.jsonl` and a new `audit.jsonl` is started; the
//! oldest rotated segments beyond the bound are deleted.
//!
//! A crash can leave a torn last line: a record whose vote or block was never sent (the
//! send waits for the sync). [`read_records`] reports it as an error naming the file and
//! line; the node, at its next start, cuts it off and logs what it cut.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use huione_core::audit::AuditRecord;

pub const CURRENT: &str = "audit.jsonl";

pub struct AuditLog {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    bytes: u64,
    max_bytes: u64,
    keep_rotated: usize,
    dirty: bool,
}

/// Rotated segments in `dir`, oldest first.
pub fn rotated_segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let seq = name
                .strip_prefix("audit-")?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()?;
            Some((seq, e.path()))
        })
        .collect();
    v.sort();
    v
}

impl AuditLog {
    /// Opens `<dir>/audit.jsonl` for appending. A torn last line (a crash during a write)
    /// is cut off and logged with what was cut: its vote or block was never sent.
    pub fn open(dir: &Path, max_bytes: u64, keep_rotated: usize) -> anyhow::Result<AuditLog> {
        let path = dir.join(CURRENT);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open the audit log {}", path.display()))?;
        let mut bytes = file.metadata()?.len();
        if let Some((keep, torn)) = torn_tail(&file, bytes)
            .with_context(|| format!("cannot read the audit log {}", path.display()))?
        {
            tracing::warn!(
                "{}: torn last record ({} bytes, a crash during a write; its vote or block was never sent) cut off: {}",
                path.display(),
                bytes - keep,
                String::from_utf8_lossy(&torn)
            );
            file.set_len(keep)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot cut the torn line of {}", path.display()))?;
            bytes = keep;
        }
        Ok(AuditLog {
            dir: dir.to_path_buf(),
            file,
            path,
            bytes,
            max_bytes: max_bytes.max(1),
            keep_rotated,
            dirty: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (durable only after [`AuditLog::sync`]).
    pub fn append(&mut self, r: &AuditRecord) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(r)?;
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line) {
            // A full disk can take part of the line: cut it off, or the next record would
            // be glued to it and the log would no longer read (its vote or block is not
            // sent: the caller sends only what was appended and synced).
            let cut = self.file.set_len(self.bytes);
            return Err(anyhow::Error::new(e).context(match cut {
                Ok(()) => format!("cannot append to the audit log {}", self.path.display()),
                Err(cut) => format!(
                    "cannot append to the audit log {} (and cannot cut the partial line: {cut}; \
                     the next start cuts it)",
                    self.path.display()
                ),
            }));
        }
        self.bytes += line.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Makes every appended record durable (one fdatasync), then rotates if the segment
    /// is over its bound.
    pub fn sync(&mut self) -> anyhow::Result<()> {
        if self.dirty {
            self.file
                .sync_data()
                .with_context(|| format!("cannot sync the audit log {}", self.path.display()))?;
            self.dirty = false;
        }
        if self.bytes >= self.max_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> anyhow::Result<()> {
        let rotated = rotated_segments(&self.dir);
        let seq = rotated.last().map_or(1, |(s, _)| s + 1);
        let to = self.dir.join(format!("audit-{seq:06}.jsonl"));
        std::fs::rename(&self.path, &to).with_context(|| {
            format!("cannot rotate {} to {}", self.path.display(), to.display())
        })?;
        self.file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot open the audit log {}", self.path.display()))?;
        super::blockstore::sync_dir(&self.dir)?;
        self.bytes = 0;
        let rotated = rotated_segments(&self.dir);
        let excess = rotated.len().saturating_sub(self.keep_rotated);
        for (_, old) in rotated.into_iter().take(excess) {
            std::fs::remove_file(&old).with_context(|| {
                format!("cannot delete the old audit segment {}", old.display())
            })?;
        }
        Ok(())
    }
}

/// If the file does not end with a newline: where its last line starts, and that line.
/// Reads backwards from the end in chunks, so opening a large log reads little of it.
fn torn_tail(file: &File, len: u64) -> std::io::Result<Option<(u64, Vec<u8>)>> {
    use std::os::unix::fs::FileExt;
    if len == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(None);
    }
    const CHUNK: u64 = 64 * 1024;
    let mut end = len;
    let mut tail = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let mut buf = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut buf, start)?;
        if let Some(i) = buf.iter().rposition(|b| *b == b'\n') {
            buf.drain(..=i);
            buf.extend_from_slice(&tail);
            return Ok(Some((start + i as u64 + 1, buf)));
        }
        buf.extend_from_slice(&tail);
        tail = buf;
        end = start;
    }
    Ok(Some((0, tail)))
}

/// A problem with the audit log that makes it unusable as proof.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{file} line {line}: torn last line ({bytes} bytes without an end of line: the process \
         stopped while writing it; its vote or block was not sent, since records are synced \
         before sending). huione-validator cuts it off at its next start"
    )]
    TornLastLine {
        file: PathBuf,
        line: usize,
        bytes: usize,
    },
    #[error("{file} line {line} is not an audit record: {source}")]
    BadLine {
        file: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error("no audit log in {dir} (expected {CURRENT})")]
    Missing { dir: PathBuf },
}

/// Every record of a ledger's audit log: rotated segments in order, then `audit.jsonl`.
pub fn read_records(dir: &Path) -> Result<Vec<AuditRecord>, ReadError> {
    let mut files: Vec<PathBuf> = rotated_segments(dir).into_iter().map(|(_, p)| p).collect();
    let current = dir.join(CURRENT);
    if current.exists() {
        files.push(current);
    } else if files.is_empty() {
        return Err(ReadError::Missing {
            dir: dir.to_path_buf(),
        });
    }
    let mut out = Vec::new();
    for f in files {
        read_file(&f, &mut out)?;
    }
    Ok(out)
}

/// Reads one segment's records into `out`.
pub fn read_file(file: &Path, out: &mut Vec<AuditRecord>) -> Result<(), ReadError> {
    let bytes = std::fs::read(file).map_err(|source| ReadError::Io {
        file: file.to_path_buf(),
        source,
    })?;
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    for (i, line) in bytes[..complete].split(|b| *b == b'\n').enumerate() {
        let line_no = i + 1;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let rec = serde_json::from_slice(line).map_err(|source| ReadError::BadLine {
            file: file.to_path_buf(),
            line: line_no,
            source,
        })?;
        out.push(rec);
    }
    if complete < bytes.len() {
        return Err(ReadError::TornLastLine {
            file: file.to_path_buf(),
            line: bytes[..complete].iter().filter(|b| **b == b'\n').count() + 1,
            bytes: bytes.len() - complete,
        });
    }
    Ok(())
}
