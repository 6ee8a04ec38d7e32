//! Crash-safe file replacement: write a temporary file next to the target, fsync it,
//! rename it over the target, fsync the directory. A reader, or the machine after a
//! crash, sees the old content or the new one, never a torn file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// How [`write_atomic_with`] creates the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    /// Permission bits of the new file on Unix (`0o600` for secrets). `None`: what
    /// `File::create` gives (0o666 less the umask).
    pub mode: Option<u32>,
    /// Replace an existing file. When false, a file present at `path` (even one that
    /// appeared while the new one was being written) is an `AlreadyExists` error and is
    /// left as it is.
    pub overwrite: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            mode: None,
            overwrite: true,
        }
    }
}

impl WriteOptions {
    /// Default options with the file's permission bits set to `mode`.
    pub fn mode(mode: u32) -> WriteOptions {
        WriteOptions {
            mode: Some(mode),
            ..WriteOptions::default()
        }
    }
}

/// Replaces `path` with `bytes` atomically and durably (temp file, fsync, rename, fsync
/// of the directory). On error `path` is untouched and the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, bytes, WriteOptions::default())
}

/// [`write_atomic`] with a file mode and an overwrite rule. The error keeps the
/// `io::ErrorKind` of the step that failed and names that step and its file; callers add
/// which file they were writing and why.
pub fn write_atomic_with(path: &Path, bytes: &[u8], opts: WriteOptions) -> io::Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let result = write_temp_then_rename(&tmp, path, bytes, opts);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    sync_dir(&dir)
}

fn write_temp_then_rename(
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
    opts: WriteOptions,
) -> io::Result<()> {
    let step = |what: &str, file: &Path| {
        let what = what.to_string();
        let file = file.display().to_string();
        move |e: io::Error| io::Error::new(e.kind(), format!("{what} {file}: {e}"))
    };
    // A temp file left by a crash is replaced (and its old mode with it).
    match std::fs::remove_file(tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(step("cannot remove the stale temporary file", tmp)(e))
        }
        _ => {}
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if let Some(mode) = opts.mode {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    }
    let mut f = options
        .open(tmp)
        .map_err(step("cannot create the temporary file", tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(step("cannot write the temporary file", tmp))?;
    drop(f);
    if !opts.overwrite && path.symlink_metadata().is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists (it appeared while writing)", path.display()),
        ));
    }
    std::fs::rename(tmp, path).map_err(step(&format!("cannot rename {} to", tmp.display()), path))
}

/// fsyncs the directory `dir`, so that a rename, creation or removal in it survives a
/// crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot sync the directory {}: {e}", dir.display()),
        )
    })
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(entries(dir.path()), ["a.json"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tower.bin");
        write_atomic(&path, b"old").unwrap();
        // The temporary file's place is taken by a non-empty directory: creating the
        // temporary file fails (even as root).
        let blocker = dir.path().join(".tower.bin.tmp");
        std::fs::create_dir(&blocker).unwrap();
        std::fs::write(blocker.join("x"), b"").unwrap();
        let err = write_atomic(&path, b"new").unwrap_err();
        assert!(err.to_string().contains(".tower.bin.tmp"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn a_failed_rename_removes_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory cannot be replaced by a file.
        let path = dir.path().join("target");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("kept"), b"x").unwrap();
        let err = write_atomic(&path, b"new").unwrap_err();
        assert!(err.to_string().contains("cannot rename"), "{err}");
        assert!(path.join("kept").is_file());
        assert_eq!(entries(dir.path()), ["target"]);
    }

    #[test]
    fn without_overwrite_an_existing_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.json");
        std::fs::write(&path, b"old").unwrap();
        let opts = WriteOptions {
            overwrite: false,
            ..WriteOptions::mode(0o600)
        };
        let err = write_atomic_with(&path, b"new", opts).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["id.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_mode_applies_even_over_a_stale_temporary_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let stale = dir.path().join(".key.pem.tmp");
        std::fs::write(&stale, b"left by a crash").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic_with(&path, b"secret", WriteOptions::mode(0o600)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        assert_eq!(entries(dir.path()), ["key.pem"]);
    }

    #[test]
    fn a_bare_file_name_and_a_missing_directory() {
        let err = write_atomic(Path::new("/nonexistent-huione-dir/x"), b"x").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-huione-dir/.x.tmp"),
            "{err}"
        );
        assert_eq!(parent_dir(Path::new("x")), PathBuf::from("."));
        assert!(write_atomic(Path::new("/"), b"x").is_err());
    }
}
