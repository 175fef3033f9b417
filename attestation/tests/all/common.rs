//! Shared helpers: locating vectors and flipping bytes.

use std::path::PathBuf;

/// The vectors directory, or None (with a printed reason) when absent.
pub fn vectors() -> Option<PathBuf> {
    let dir = match std::env::var_os("PLINTH_VECTORS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"),
    };
    if dir.join("MANIFEST.txt").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: evidence vectors not found at {} (set PLINTH_VECTORS)",
            dir.display()
        );
        None
    }
}

/// Reads a vector file.
pub fn read(dir: &std::path::Path, rel: &str) -> Vec<u8> {
    std::fs::read(dir.join(rel)).unwrap_or_else(|err| panic!("reading vector {rel}: {err}"))
}

/// 2026-01-01T00:00:00Z, a time at which every vector certificate is valid.
pub const AT_2026: i64 = 1_767_225_600;
