//! The published WIT of `plinth:policy`, for plugin authors (`plinthctl plugin wit`):
//! every released version's text, frozen in `plugins/wit/frozen/<version>/` and embedded
//! here, so a plinthctl binary prints exactly the interface its host serves.

use crate::version::WitVersion;

/// Every released version (ascending) and its WIT text, verbatim.
pub const RELEASED: &[(&str, &str)] = &[
    ("0.1.0", include_str!("../../wit/frozen/0.1.0/policy.wit")),
    ("0.1.1", include_str!("../../wit/frozen/0.1.1/policy.wit")),
    ("0.1.2", include_str!("../../wit/frozen/0.1.2/policy.wit")),
];

/// The WIT this host is built from (`plugins/wit/policy.wit`); a test checks that it is
/// the frozen text of
/// [`crate::version::HOST_WIT_VERSION`].
pub const CURRENT: &str = include_str!("../../wit/policy.wit");

/// A version that was never released.
#[derive(Debug, thiserror::Error)]
#[error("plinth:policy has no released version {asked:?} (released: {released})")]
pub struct UnknownWitVersion {
    /// The version asked for.
    pub asked: String,
    /// The released versions, comma-separated.
    pub released: String,
}

/// The released versions, ascending.
pub fn versions() -> Vec<&'static str> {
    RELEASED.iter().map(|(version, _)| *version).collect()
}

/// The WIT text of `version` (`0.1.0`, or `plinth:policy@0.1.0`), or of the version the
/// host serves when `None`.
pub fn text(version: Option<&str>) -> Result<&'static str, UnknownWitVersion> {
    let Some(asked) = version else {
        return Ok(CURRENT);
    };
    let bare = asked.strip_prefix("plinth:policy@").unwrap_or(asked);
    RELEASED
        .iter()
        .find(|(released, _)| *released == bare)
        .map(|(_, text)| *text)
        .ok_or_else(|| UnknownWitVersion {
            asked: asked.to_string(),
            released: versions().join(", "),
        })
}

/// The version declared by a WIT text's `package plinth:policy@X.Y.Z;` line.
pub fn declared_version(text: &str) -> Option<WitVersion> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("package plinth:policy@")?;
        WitVersion::parse(rest.strip_suffix(';')?.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::HOST_WIT_VERSION;

    #[test]
    fn every_release_declares_its_own_version() {
        for (version, text) in RELEASED {
            assert_eq!(
                declared_version(text)
                    .map(|found| found.to_string())
                    .as_deref(),
                Some(*version),
                "frozen/{version}/policy.wit"
            );
        }
    }

    #[test]
    fn current_wit_is_the_frozen_text_of_the_served_version() {
        // Editing plugins/wit/policy.wit without releasing a new version (and freezing
        // it) would silently change an interface plugins were built against.
        assert_eq!(declared_version(CURRENT), Some(HOST_WIT_VERSION));
        let served = HOST_WIT_VERSION.to_string();
        assert_eq!(text(Some(&served)).unwrap(), CURRENT);
        assert_eq!(versions().last().copied(), Some(served.as_str()));
    }

    #[test]
    fn versions_are_found_with_or_without_the_package_name() {
        assert!(
            text(Some("0.1.0"))
                .unwrap()
                .contains("package plinth:policy@0.1.0;")
        );
        assert_eq!(
            text(Some("plinth:policy@0.1.0")).unwrap(),
            text(Some("0.1.0")).unwrap()
        );
        let error = text(Some("0.3.0")).unwrap_err().to_string();
        assert!(
            error.contains("\"0.3.0\"") && error.contains("0.1.0, 0.1.1, 0.1.2"),
            "{error}"
        );
    }
}
