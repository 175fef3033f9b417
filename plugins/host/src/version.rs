//! WIT versions and capability checks on a component's imports and exports.
//!
//! Versioning rule (also in docs/plugins.md): `plinth:policy` follows Cargo's semver
//! reading. Two versions are compatible when their first non-zero component among
//! (major, minor) is equal: 0.1.0 and 0.1.7 are compatible, 0.1.x and 0.2.x are not,
//! 1.2.0 and 1.9.3 are. A host at version H serves plugins built for any version P
//! compatible with H and not newer than H; compatible releases only ever add new
//! interfaces, so everything such a plugin imports or exports exists in H with the same
//! types. Wasmtime's linker resolves a plugin's `plinth:policy/host@0.1.0` import to the
//! host's `@0.1.2` definition by the same rule.

use crate::config::PluginKind;

/// The WIT package this host implements.
pub const HOST_WIT_VERSION: WitVersion = WitVersion {
    major: 0,
    minor: 1,
    patch: 2,
};

/// A semantic version of the `plinth:policy` package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WitVersion {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
}

impl std::fmt::Display for WitVersion {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl WitVersion {
    /// Parse `MAJOR.MINOR.PATCH` (no pre-release or build metadata).
    pub fn parse(text: &str) -> Option<WitVersion> {
        let mut parts = text.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(WitVersion {
            major,
            minor,
            patch,
        })
    }

    /// Whether a plugin built for `self` can be served by a host at `host`.
    pub fn served_by(self, host: WitVersion) -> bool {
        let same_line = if host.major == 0 {
            self.major == 0
                && self.minor == host.minor
                && (host.minor != 0 || self.patch == host.patch)
        } else {
            self.major == host.major
        };
        same_line && self <= host
    }

    /// The range a host at this version serves, for error messages.
    pub fn served_range(self) -> String {
        if self.major == 0 {
            format!("0.{}.0 to {self}", self.minor)
        } else {
            format!("{}.0.0 to {self}", self.major)
        }
    }
}

/// Parse `plinth:policy@X.Y.Z`.
pub fn parse_wit_package(text: &str) -> Option<WitVersion> {
    WitVersion::parse(text.strip_prefix("plinth:policy@")?)
}

/// Split `ns:pkg/iface@1.2.3` into (`ns:pkg/iface`, version).
pub fn split_versioned(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((base, version)) => (base, Some(version)),
        None => (name, None),
    }
}

/// WASI interfaces a plugin may import. They are backed by a WASI context that grants
/// nothing: no preopened directories, no environment, no arguments, no sockets, stdin
/// empty, stdout and stderr discarded, clocks and randomness from the host (frozen and
/// seeded in deterministic mode). Rust's standard library for wasm32-wasip2 imports some
/// of them even when the plugin never uses them.
pub const ALLOWED_WASI: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// plinth interfaces every plugin may import.
pub const ALLOWED_PLINTH: &[&str] = &[
    "plinth:policy/host",
    "plinth:policy/types",
    "plinth:policy/entropy",
];

/// plinth interfaces only plugins of one kind may import (added in 0.1.2): the
/// scheduling world's `network` and the reporting world's `liveness`.
pub const ALLOWED_PLINTH_BY_KIND: &[(PluginKind, &str)] = &[
    (PluginKind::Scheduling, "plinth:policy/network"),
    (PluginKind::Reporting, "plinth:policy/liveness"),
];

/// Whether a plugin of `kind` may import the plinth interface `base` (no version).
pub fn plinth_import_allowed(kind: PluginKind, base: &str) -> bool {
    ALLOWED_PLINTH.contains(&base)
        || ALLOWED_PLINTH_BY_KIND
            .iter()
            .any(|(allowed_kind, name)| *allowed_kind == kind && *name == base)
}

/// Why a component's imports or exports are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceProblem {
    /// An import outside the allow-lists.
    Ungranted(String),
    /// A plinth interface at a version this host does not serve.
    WrongVersion {
        /// The full import or export name.
        name: String,
        /// The version the plugin was built for.
        found: String,
    },
    /// The component does not export the interface of its declared kind.
    MissingExport {
        /// The expected interface.
        expected: &'static str,
        /// What it exports instead.
        found: Vec<String>,
    },
}

/// Check a component's import and export names for a plugin of `kind`. Returns the
/// WIT version the plugin was built for (from its export).
pub fn check_interfaces(
    kind: PluginKind,
    imports: &[String],
    exports: &[String],
) -> Result<WitVersion, InterfaceProblem> {
    let mut built_for = None;
    for export in exports {
        let (base, version) = split_versioned(export);
        if !base.starts_with("plinth:policy/") {
            continue;
        }
        let parsed = version.and_then(WitVersion::parse);
        match parsed {
            Some(found) if found.served_by(HOST_WIT_VERSION) => {
                if base == kind.export_interface() {
                    built_for = Some(found);
                }
            }
            _ => {
                return Err(InterfaceProblem::WrongVersion {
                    name: export.clone(),
                    found: version.unwrap_or("none").to_string(),
                });
            }
        }
    }
    let Some(built_for) = built_for else {
        return Err(InterfaceProblem::MissingExport {
            expected: kind.export_interface(),
            found: exports.to_vec(),
        });
    };
    for import in imports {
        let (base, version) = split_versioned(import);
        if plinth_import_allowed(kind, base) {
            let compatible = version
                .and_then(WitVersion::parse)
                .is_some_and(|found| found.served_by(HOST_WIT_VERSION));
            if !compatible {
                return Err(InterfaceProblem::WrongVersion {
                    name: import.clone(),
                    found: version.unwrap_or("none").to_string(),
                });
            }
        } else if !ALLOWED_WASI.contains(&base) {
            return Err(InterfaceProblem::Ungranted(import.clone()));
        }
    }
    Ok(built_for)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> WitVersion {
        WitVersion::parse(text).unwrap()
    }

    #[test]
    fn compatibility_follows_cargo_semver() {
        let host = v("0.1.2");
        assert!(v("0.1.0").served_by(host));
        assert!(v("0.1.1").served_by(host));
        assert!(v("0.1.2").served_by(host));
        assert!(
            !v("0.1.3").served_by(host),
            "newer compatible plugin may use what the host lacks"
        );
        assert!(!v("0.2.0").served_by(host));
        assert!(!v("1.0.0").served_by(host));
        assert!(!v("0.0.1").served_by(v("0.0.2")));
        assert!(v("1.0.0").served_by(v("1.3.0")));
        assert!(!v("2.0.0").served_by(v("1.3.0")));
        assert!(WitVersion::parse("1.2").is_none());
        assert!(WitVersion::parse("1.2.3.4").is_none());
        assert_eq!(parse_wit_package("plinth:policy@0.1.0"), Some(v("0.1.0")));
        assert_eq!(parse_wit_package("wasi:cli@0.1.0"), None);
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    #[test]
    fn interface_checks() {
        let ok = check_interfaces(
            PluginKind::Pricing,
            &strings(&["plinth:policy/host@0.1.0", "wasi:cli/environment@0.2.3"]),
            &strings(&["plinth:policy/pricing@0.1.0"]),
        );
        assert_eq!(ok, Ok(v("0.1.0")));
        let wrong_major = check_interfaces(
            PluginKind::Pricing,
            &[],
            &strings(&["plinth:policy/pricing@1.0.0"]),
        );
        assert!(matches!(
            wrong_major,
            Err(InterfaceProblem::WrongVersion { .. })
        ));
        let fs = check_interfaces(
            PluginKind::Pricing,
            &strings(&["wasi:filesystem/preopens@0.2.3"]),
            &strings(&["plinth:policy/pricing@0.1.1"]),
        );
        assert_eq!(
            fs,
            Err(InterfaceProblem::Ungranted(
                "wasi:filesystem/preopens@0.2.3".to_string()
            ))
        );
        let scheduling_network = check_interfaces(
            PluginKind::Scheduling,
            &strings(&["plinth:policy/network@0.1.2", "plinth:policy/host@0.1.2"]),
            &strings(&["plinth:policy/scheduling@0.1.2"]),
        );
        assert_eq!(scheduling_network, Ok(v("0.1.2")));
        let reporting_liveness = check_interfaces(
            PluginKind::Reporting,
            &strings(&["plinth:policy/liveness@0.1.2"]),
            &strings(&["plinth:policy/reporting@0.1.2"]),
        );
        assert_eq!(reporting_liveness, Ok(v("0.1.2")));
        // Each 0.1.2 interface is granted only to the kind whose world imports it.
        let pricing_network = check_interfaces(
            PluginKind::Pricing,
            &strings(&["plinth:policy/network@0.1.2"]),
            &strings(&["plinth:policy/pricing@0.1.2"]),
        );
        assert_eq!(
            pricing_network,
            Err(InterfaceProblem::Ungranted(
                "plinth:policy/network@0.1.2".to_string()
            ))
        );
        let scheduling_liveness = check_interfaces(
            PluginKind::Scheduling,
            &strings(&["plinth:policy/liveness@0.1.2"]),
            &strings(&["plinth:policy/scheduling@0.1.2"]),
        );
        assert!(matches!(
            scheduling_liveness,
            Err(InterfaceProblem::Ungranted(_))
        ));
        let future = check_interfaces(
            PluginKind::Scheduling,
            &[],
            &strings(&["plinth:policy/scheduling@0.1.3"]),
        );
        assert!(
            matches!(future, Err(InterfaceProblem::WrongVersion { ref found, .. }) if found == "0.1.3")
        );
        let wrong_kind = check_interfaces(
            PluginKind::Scheduling,
            &[],
            &strings(&["plinth:policy/pricing@0.1.1"]),
        );
        assert!(matches!(
            wrong_kind,
            Err(InterfaceProblem::MissingExport { .. })
        ));
    }
}
