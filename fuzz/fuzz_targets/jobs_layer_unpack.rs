//! Fuzz the safe layer extractor with arbitrary (tar or gzip) bytes: it must
//! return an `UnpackError` or unpack, never panic, and never write outside
//! its private directory (entries are checked against the directory below).
#![no_main]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use plinth_jobs::unpack::{UnpackLimits, Unpacker};

static COUNTER: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let base = std::env::temp_dir().join(format!("plinth-fuzz-unpack-{}", std::process::id()));
    let root: PathBuf = base.join(COUNTER.fetch_add(1, Ordering::Relaxed).to_string());
    if std::fs::create_dir_all(&root).is_err() {
        return;
    }
    let limits = UnpackLimits {
        max_entries: 256,
        max_total_bytes: 1 << 20,
    };
    if let Ok(mut unpacker) = Unpacker::new(&root, limits) {
        let _ = unpacker.apply_layer("fuzz", data, None);
    }
    let _ = std::fs::remove_dir_all(&root);
});
