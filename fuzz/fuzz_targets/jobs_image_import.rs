//! Fuzz the image importer (archive extraction, OCI index/manifest/config
//! resolution, docker `manifest.json`, layer verification) with arbitrary
//! bytes, in a private temporary directory: it must return an `ImageError`
//! or import, never panic, never write outside its store (a sentinel
//! directory beside it stays empty), and never leave staging behind.
//!
//! The first byte picks the input: 0 an OCI archive, 1 a `docker save`
//! archive (both: the rest of the bytes are the tar), anything else an OCI
//! layout whose `index.json`, manifest and config are the rest of the bytes
//! split at NUL bytes. In layout documents `@M`, `@C`, `@L` and `@D` are
//! replaced by the manifest digest, the config digest, the digest of a small
//! valid layer blob and that layer's diff_id, so that inputs can reach the
//! later stages of the pipeline.
#![no_main]

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use plinth_jobs::image::ImageStore;
use plinth_jobs::spec::{ImageRef, ImageSource};
use plinth_jobs::unpack::UnpackLimits;

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn sha256(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut idx = 0;
    while idx < haystack.len() {
        if haystack[idx..].starts_with(needle) {
            out.extend_from_slice(with);
            idx += needle.len();
        } else {
            out.push(haystack[idx]);
            idx += 1;
        }
    }
    out
}

/// A one-file layer tar (512-byte header, data block, two zero blocks).
fn small_layer() -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..5].copy_from_slice(b"hello");
    header[100..107].copy_from_slice(b"0000644");
    header[108..115].copy_from_slice(b"0000000");
    header[116..123].copy_from_slice(b"0000000");
    header[124..135].copy_from_slice(b"00000000005");
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut tar = header.to_vec();
    let mut data = [0u8; 512];
    data[..5].copy_from_slice(b"world");
    tar.extend_from_slice(&data);
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

fn write_layout(dir: &Path, data: &[u8]) -> std::io::Result<()> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let layer = small_layer();
    let layer_digest = format!("sha256:{}", sha256(&layer));
    fs::write(blobs.join(sha256(&layer)), &layer)?;
    let mut parts = data.splitn(3, |b| *b == 0);
    let index = parts.next().unwrap_or_default();
    let manifest = parts.next().unwrap_or_default();
    let config = parts.next().unwrap_or_default();
    let fill = |bytes: &[u8]| {
        let bytes = replace(bytes, b"@L", layer_digest.as_bytes());
        replace(&bytes, b"@D", layer_digest.as_bytes())
    };
    let config = fill(config);
    let config_digest = format!("sha256:{}", sha256(&config));
    fs::write(blobs.join(sha256(&config)), &config)?;
    let manifest = replace(&fill(manifest), b"@C", config_digest.as_bytes());
    let manifest_digest = format!("sha256:{}", sha256(&manifest));
    fs::write(blobs.join(sha256(&manifest)), &manifest)?;
    let index = replace(&fill(index), b"@M", manifest_digest.as_bytes());
    let index = replace(&index, b"@C", config_digest.as_bytes());
    fs::write(dir.join("index.json"), index)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let base = std::env::temp_dir().join(format!("plinth-fuzz-import-{}", std::process::id()));
    let work = base.join(COUNTER.fetch_add(1, Ordering::Relaxed).to_string());
    let sentinel = work.join("outside");
    let source_path = work.join("source");
    if fs::create_dir_all(&sentinel).is_err() {
        return;
    }
    let source = match mode {
        0 | 1 => {
            if fs::write(&source_path, rest).is_err() {
                return;
            }
            if mode == 0 {
                ImageSource::OciArchive
            } else {
                ImageSource::DockerArchive
            }
        }
        _ => {
            if write_layout(&source_path, rest).is_err() {
                return;
            }
            ImageSource::OciLayout
        }
    };
    let limits = UnpackLimits {
        max_entries: 256,
        max_total_bytes: 1 << 20,
    };
    let Ok(store) = ImageStore::new(&work.join("store"), limits) else {
        return;
    };
    let image = ImageRef {
        source,
        path: source_path,
        reference: None,
        digest: None,
    };
    if let Ok(imported) = store.import(&image, &mut |_| {}) {
        assert!(imported.rootfs.starts_with(store.root()));
        assert!(imported.rootfs.is_dir());
    }
    let n_outside = fs::read_dir(&sentinel).map(|d| d.count()).unwrap_or(0);
    assert_eq!(n_outside, 0, "the import wrote beside its store");
    let n_staging = fs::read_dir(store.root().join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(n_staging, 0, "the import left staging behind");
    let mut names: Vec<_> = fs::read_dir(&work)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    names.sort();
    assert_eq!(
        names,
        ["outside", "source", "store"],
        "unexpected files beside the store"
    );
    let _ = fs::remove_dir_all(&work);
});
