//! The one durable write: the bytes go to a temporary file beside the target, the file
//! is fsynced, renamed (or, for files that must never be replaced, hard-linked) over the
//! target, and the directory is fsynced. After a crash or a power cut the target holds
//! either the old contents or the new ones, never an empty or half-written file — the
//! same guarantee SQLite's journal gives the database. Job results, job states, keys,
//! plugin packages and cache entries all go through here.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Errors of a durable write.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// A step of the write failed.
    #[error("cannot {action} {path}")]
    Io {
        /// The step (`create`, `write`, `sync`, `rename`, ...).
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The target exists and the write was asked never to replace a file.
    #[error("{path} already exists and is never replaced")]
    Exists {
        /// The target.
        path: PathBuf,
    },
}

/// How a durable write treats the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Permission bits of the new file.
    pub mode: u32,
    /// Refuse to replace an existing target (keys: a key once written is never replaced).
    pub create_new: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            mode: 0o644,
            create_new: false,
        }
    }
}

impl WriteOptions {
    /// A private file (mode 0600) that may be replaced.
    pub const PRIVATE: WriteOptions = WriteOptions {
        mode: 0o600,
        create_new: false,
    };
    /// A private file (mode 0600) that is never replaced once written.
    pub const PRIVATE_NEW: WriteOptions = WriteOptions {
        mode: 0o600,
        create_new: true,
    };
}

/// Writes `bytes` to `path` durably, replacing it (mode 0644).
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), DurableError> {
    write_with(path, bytes, WriteOptions::default())
}

/// Writes `bytes` to `path` durably with `options`.
pub fn write_with(path: &Path, bytes: &[u8], options: WriteOptions) -> Result<(), DurableError> {
    let io = |action: &'static str, at: &Path| {
        let at = at.to_owned();
        move |source| DurableError::Io {
            action,
            path: at,
            source,
        }
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let temporary = temporary_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(options.mode)
        .open(&temporary)
        .map_err(io("create", &temporary))?;
    let written = file
        .write_all(bytes)
        .map_err(io("write", &temporary))
        .and_then(|()| file.sync_all().map_err(io("sync", &temporary)));
    drop(file);
    let installed = written.and_then(|()| {
        if options.create_new {
            // A hard link fails when the target exists, so nothing is ever replaced.
            match std::fs::hard_link(&temporary, path) {
                Ok(()) => Ok(()),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(DurableError::Exists {
                        path: path.to_owned(),
                    })
                }
                Err(source) => Err(io("install", path)(source)),
            }
        } else {
            std::fs::rename(&temporary, path).map_err(io("rename", path))
        }
    });
    if installed.is_err() || options.create_new {
        // Best effort: the temporary name is unique, a leftover harms nothing.
        let _ = std::fs::remove_file(&temporary);
    }
    installed?;
    sync_dir(dir)
}

/// Fsyncs a directory, so that a rename or a new entry in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), DurableError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| DurableError::Io {
            action: "sync the directory",
            path: dir.to_owned(),
            source,
        })
}

/// A temporary name beside `path`, unique within the process and across processes.
fn temporary_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.json");
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(entries(dir.path()), ["result.json"]);
    }

    #[test]
    fn create_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        write_with(&path, b"first", WriteOptions::PRIVATE_NEW).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = write_with(&path, b"second", WriteOptions::PRIVATE_NEW).unwrap_err();
        assert!(matches!(err, DurableError::Exists { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(entries(dir.path()), ["node.key"]);
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/dir/state.json");
        let err = write(&path, b"x").unwrap_err();
        assert!(err.to_string().contains("missing/dir"), "{err}");
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"keep").unwrap();
        let path = dir.path().join("state.json");
        std::os::unix::fs::symlink(&outside, &path).unwrap();
        write(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
}
