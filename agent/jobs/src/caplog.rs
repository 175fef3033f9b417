//! Size-capped log files that drop their oldest bytes and say so.
//!
//! When a log would grow past its cap, its newest three quarters are kept
//! behind a first line `[plinth: N earlier bytes dropped (log cap C bytes)]`
//! (N counts every byte dropped so far) and the file is replaced atomically
//! with the one durable write (`plinth_toolbox::durable`: temporary file,
//! fsync, rename, fsync of the directory), so a reader, or the host after a
//! power cut, always sees a whole file.
//! The work is amortised: a rewrite happens at most once per cap/4 bytes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use plinth_toolbox::durable::{self, DurableError};

/// Smallest cap accepted (smaller values are raised to it).
pub const MIN_CAP: u64 = 4096;

/// Errors from writing a capped log.
#[derive(Debug, thiserror::Error)]
pub enum CapLogError {
    /// A file operation failed.
    #[error("cannot {op} log file {path}")]
    Io {
        /// Operation.
        op: &'static str,
        /// Log file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Replacing the log with its kept tail failed.
    #[error("cannot rotate log file")]
    Rotate(#[from] DurableError),
}

/// A log file with a size cap.
#[derive(Debug)]
pub struct CappedLog {
    path: PathBuf,
    file: File,
    cap: u64,
    size: u64,
    marker_len: u64,
    dropped: u64,
}

fn marker(dropped: u64, cap: u64) -> String {
    format!("[plinth: {dropped} earlier bytes dropped (log cap {cap} bytes)]\n")
}

impl CappedLog {
    /// Creates (truncating) the log at `path` with the given cap.
    pub fn create(path: &Path, cap: u64) -> Result<CappedLog, CapLogError> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(|source| CapLogError::Io {
                op: "create",
                path: path.to_path_buf(),
                source,
            })?;
        Ok(CappedLog {
            path: path.to_path_buf(),
            file,
            cap: cap.max(MIN_CAP),
            size: 0,
            marker_len: 0,
            dropped: 0,
        })
    }

    /// Total bytes dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Appends `data`, dropping the oldest bytes when over the cap.
    pub fn write(&mut self, data: &[u8]) -> Result<(), CapLogError> {
        let mut data = data;
        let keep_max = self.cap * 3 / 4;
        if data.len() as u64 > keep_max {
            let skip = data.len() - keep_max as usize;
            // The old content goes too: everything before the kept tail is dropped.
            self.dropped += (self.size - self.marker_len) + skip as u64;
            data = &data[skip..];
            return self.rewrite(&[], data);
        }
        if self.size + data.len() as u64 > self.cap {
            let content_len = self.size - self.marker_len;
            let keep_old = keep_max.saturating_sub(data.len() as u64).min(content_len);
            let mut old_tail = vec![0u8; keep_old as usize];
            let mut reader = File::open(&self.path).map_err(|source| CapLogError::Io {
                op: "open",
                path: self.path.clone(),
                source,
            })?;
            reader
                .seek(SeekFrom::Start(self.size - keep_old))
                .and_then(|_| reader.read_exact(&mut old_tail))
                .map_err(|source| CapLogError::Io {
                    op: "read",
                    path: self.path.clone(),
                    source,
                })?;
            self.dropped += content_len - keep_old;
            return self.rewrite(&old_tail, data);
        }
        self.file
            .write_all(data)
            .map_err(|source| CapLogError::Io {
                op: "write",
                path: self.path.clone(),
                source,
            })?;
        self.size += data.len() as u64;
        Ok(())
    }

    fn rewrite(&mut self, old_tail: &[u8], data: &[u8]) -> Result<(), CapLogError> {
        let io_err = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| CapLogError::Io { op, path, source }
        };
        let header = marker(self.dropped, self.cap);
        let mut contents = Vec::with_capacity(header.len() + old_tail.len() + data.len());
        contents.extend_from_slice(header.as_bytes());
        contents.extend_from_slice(old_tail);
        contents.extend_from_slice(data);
        durable::write(&self.path, &contents)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io_err("reopen", &self.path))?;
        self.marker_len = header.len() as u64;
        self.size = self.marker_len + old_tail.len() as u64 + data.len() as u64;
        Ok(())
    }

    /// Copies `reader` into the log until end of file.
    pub fn copy_from(&mut self, reader: &mut dyn Read) -> Result<(), CapLogError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n_read) => self.write(&buf[..n_read])?,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(CapLogError::Io {
                        op: "read the stream for",
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn small_logs_are_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let mut log = CappedLog::create(&path, 8192).unwrap();
        log.write(b"hello ").unwrap();
        log.write(b"world\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello world\n");
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn oldest_bytes_are_dropped_with_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let cap = 8192u64;
        let mut log = CappedLog::create(&path, cap).unwrap();
        let mut written = Vec::new();
        for line_idx in 0..2000 {
            let line = format!("line {line_idx:05}\n");
            written.extend_from_slice(line.as_bytes());
            log.write(line.as_bytes()).unwrap();
            assert!(fs::metadata(&path).unwrap().len() <= cap + 100);
        }
        let content = fs::read_to_string(&path).unwrap();
        let (first, rest) = content.split_once('\n').unwrap();
        let expected_marker = format!(
            "[plinth: {} earlier bytes dropped (log cap {cap} bytes)]",
            log.dropped()
        );
        assert_eq!(first, expected_marker);
        assert!(written.ends_with(rest.as_bytes()));
        assert_eq!(log.dropped() as usize + rest.len() + 1, written.len() + 1);
        assert!(content.ends_with("line 01999\n"));
    }

    #[test]
    fn one_huge_write_keeps_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let mut log = CappedLog::create(&path, 4096).unwrap();
        log.write(b"old").unwrap();
        let big: Vec<u8> = (0..20000u32).map(|i| b'a' + (i % 26) as u8).collect();
        log.write(&big).unwrap();
        let content = fs::read(&path).unwrap();
        assert!(content.ends_with(&big[big.len() - 3072..]));
        assert_eq!(log.dropped(), 3 + 20000 - 3072);
    }
}
