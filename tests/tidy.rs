//! Repository rules, checked as tests (in the spirit of rust-analyzer's `tidy`):
//! every Rust file opens with a `//!` module doc, and no evidence vector from the shared
//! vectors directory is copied into the repository (only the pinned public vendor roots
//! the verifier embeds as trust anchors may match).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use plinth_tests::{repo_root, vectors_dir};

/// Directories holding the project's own files (build outputs and installed npm packages
/// are skipped).
const SOURCE_DIRS: &[&str] = &[
    "agent",
    "attestation",
    "plugins",
    "packaging",
    "systemd",
    "tests",
    "docs",
    "fuzz",
    "xtask",
    "benches",
];

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "target"
            || name == "node_modules"
            || name.starts_with('.')
            || name == "corpus"
            || name == "artifacts"
        {
            continue;
        }
        if path.is_dir() {
            walk(&path, files);
        } else {
            files.push(path);
        }
    }
}

fn project_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        walk(&root.join(dir), &mut files);
    }
    files
}

#[test]
fn every_rust_file_has_a_module_doc() {
    let mut missing = Vec::new();
    let files = project_files();
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
    {
        let text = std::fs::read_to_string(path).unwrap();
        let first = text
            .lines()
            .find(|line| !line.trim().is_empty() && !line.starts_with("#!["))
            .unwrap_or("");
        if !first.starts_with("//!") {
            missing.push(
                path.strip_prefix(repo_root())
                    .unwrap()
                    .display()
                    .to_string(),
            );
        }
    }
    assert!(
        files.len() > 10,
        "found only {} files: wrong root?",
        files.len()
    );
    assert!(
        missing.is_empty(),
        "files without a //! module doc: {missing:#?}"
    );
}

/// Pinned public trust anchors that the verifier embeds on purpose (AMD and NVIDIA
/// roots); identical copies in the vectors directory are expected.
fn pinned_anchor(vector_path: &str) -> bool {
    vector_path.contains("/builtin/")
        || vector_path.contains("/verify/trust/")
        || vector_path.contains("/certs_data/cert_chain_")
        || vector_path.ends_with("verifier_device_root.pem")
        || vector_path.ends_with("verifier_RIM_root.pem")
        || vector_path.ends_with("rim_root.crt")
}

#[test]
fn no_vector_is_copied_into_the_repository() {
    let manifest = vectors_dir().join("MANIFEST.txt");
    let Ok(text) = std::fs::read_to_string(&manifest) else {
        eprintln!(
            "skipping: no vectors manifest at {} (set PLINTH_VECTORS)",
            manifest.display()
        );
        return;
    };
    let mut by_digest: HashMap<String, String> = HashMap::new();
    let mut anchors = HashSet::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(" | ").collect();
        if fields.len() >= 3 && fields[2].len() == 64 {
            if pinned_anchor(fields[0]) {
                anchors.insert(fields[2].to_owned());
            }
            by_digest.insert(fields[2].to_owned(), fields[0].to_owned());
        }
    }
    by_digest.retain(|digest, _| !anchors.contains(digest));
    assert!(!by_digest.is_empty(), "manifest format not understood");
    let mut copies = Vec::new();
    for path in project_files() {
        let bytes = std::fs::read(&path).unwrap();
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
        if let Some(vector) = by_digest.get(&digest) {
            copies.push(format!("{} is a copy of vector {vector}", path.display()));
        }
    }
    assert!(copies.is_empty(), "{copies:#?}");
}
