//! Shared helpers of plinth's cross-crate tests.

use std::path::PathBuf;

/// The repository root (the workspace root).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The evidence vectors directory: `$PLINTH_VECTORS`, else `../shared/vectors` beside the
/// repository.
pub fn vectors_dir() -> PathBuf {
    std::env::var_os("PLINTH_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/vectors"))
}
