//! The small toolbox every plinth crate shares, so that each job is done one way:
//!
//! - [`error_chain`]: one line naming an error and all its causes;
//! - [`durable`]: the one durable write (temporary file, fsync, rename, fsync of the
//!   directory) for every file something depends on after a power cut;
//! - [`pem`]: the one PEM reader (certificates, keys), DER passed through;
//! - [`keyfile`]: the one Ed25519 private-key file format (PKCS#8 in PEM `PRIVATE KEY`)
//!   for node keys, EAR signing keys and plugin-signing keys.
//!
//! **Architecture Invariant:** this crate is pure Rust and portable (no libc calls, no
//! Linux-only APIs), because `plinth-verify` depends on it and runs on auditors' laptops.

pub mod durable;
pub mod keyfile;
pub mod pem;

/// Formats an error and its chain of sources as one line: `outer: cause: root cause`.
///
/// Error messages in plinth never repeat their source (see STYLE.md), so printing the
/// chain once, at the edge, is what makes a message complete.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot load {what}")]
    struct Outer {
        what: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn chain_names_every_cause_once() {
        let error = Outer {
            what: "node.key",
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(error_chain(&error), "cannot load node.key: no such file");
        let plain = std::io::Error::other("plain");
        assert_eq!(error_chain(&plain), "plain");
    }
}
