//! `plinthctl plugin new KIND --lang rust|js NAME`: a ready plugin project (manifest,
//! source, fixtures with their expected answers, a README with the build, test, sign and
//! install steps) that builds and passes `plinthctl plugin test` unmodified. The
//! templates are files in `plugins/templates/` (the JavaScript project's build script,
//! helper library and compiler settings are those of `plugins/examples/js`), embedded
//! here so that a plinthctl binary carries them.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::config::PluginKind;
use crate::version::HOST_WIT_VERSION;

/// Errors while creating a project.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not usable as a plugin and package name.
    #[error(
        "plugin name {0:?} is not 1-64 characters of [a-z0-9-] starting with a letter (it names the package and the crate)"
    )]
    InvalidName(String),
    /// The target directory exists and is not empty.
    #[error("{0} already exists and is not empty; choose another --dir or remove it")]
    NotEmpty(PathBuf),
    /// A Rust project needs the SDK and none was given or found.
    #[error(
        "a Rust plugin depends on the plinth plugin SDK by path: pass --sdk-path <plinth checkout>/plugins/sdk ({0} does not exist)"
    )]
    SdkMissing(PathBuf),
    /// A file could not be written.
    #[error("cannot write {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A template is malformed (a bug in plinth, caught by its tests).
    #[error("template {0} is malformed")]
    Template(&'static str),
}

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Rust with `plinth-plugin-sdk`, built with cargo for wasm32-wasip2.
    Rust,
    /// TypeScript, built with componentize-js (jco for the types).
    Js,
}

impl fmt::Display for Language {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Language::Rust => "rust",
            Language::Js => "js",
        })
    }
}

/// A string that names no language.
#[derive(Debug, thiserror::Error)]
#[error("unknown plugin language {0:?} (expected rust or js)")]
pub struct LanguageParseError(pub String);

impl FromStr for Language {
    type Err = LanguageParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "rust" => Ok(Language::Rust),
            "js" | "javascript" | "ts" | "typescript" => Ok(Language::Js),
            other => Err(LanguageParseError(other.to_string())),
        }
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct ScaffoldOptions {
    /// Plugin kind.
    pub kind: PluginKind,
    /// Language.
    pub language: Language,
    /// Plugin, package and crate name: `[a-z][a-z0-9-]{0,63}`.
    pub name: String,
    /// Directory to create (must not exist, or be empty).
    pub dir: PathBuf,
    /// The SDK crate (`plugins/sdk` of a plinth checkout) for a Rust project; `None`
    /// uses the one this binary was built from, if it is still there.
    pub sdk_path: Option<PathBuf>,
}

/// The SDK this binary was built next to, for [`ScaffoldOptions::sdk_path`].
pub fn default_sdk_path() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk"))
}

const PLUGIN_TOML: &str = include_str!("../../templates/plugin.toml");
const RUST_CARGO_TOML: &str = include_str!("../../templates/rust/Cargo.toml");
const RUST_BUILD_RS: &str = include_str!("../../templates/rust/build.rs");
const RUST_README: &str = include_str!("../../templates/rust/README.md");
const RUST_GITIGNORE: &str = include_str!("../../templates/rust/gitignore");
const JS_PACKAGE_JSON: &str = include_str!("../../templates/js/package.json");
const JS_README: &str = include_str!("../../templates/js/README.md");
const JS_GITIGNORE: &str = include_str!("../../templates/js/gitignore");
/// The examples' package.json: the pinned tool versions a JS project gets.
const JS_EXAMPLES_PACKAGE_JSON: &str = include_str!("../../examples/js/package.json");
const JS_BUILD_MJS: &str = include_str!("../../examples/js/build.mjs");
const JS_TSCONFIG: &str = include_str!("../../examples/js/tsconfig.json");
const JS_HELPERS: &str = include_str!("../../examples/js/lib/plinth.ts");

/// One template file per kind: (kind, Rust source, TypeScript source, fixtures).
struct KindTemplates {
    rust: &'static str,
    js: &'static str,
    fixtures: &'static [(&'static str, &'static str)],
}

fn kind_templates(kind: PluginKind) -> KindTemplates {
    macro_rules! fixtures {
        ($kind:literal, [$($name:literal),*]) => {
            &[
                ("config.json", include_str!(concat!("../../templates/fixtures/", $kind, "/config.json"))),
                $(
                    (concat!($name, ".input.json"), include_str!(concat!("../../templates/fixtures/", $kind, "/", $name, ".input.json"))),
                    (concat!($name, ".expected.json"), include_str!(concat!("../../templates/fixtures/", $kind, "/", $name, ".expected.json"))),
                )*
            ]
        };
    }
    match kind {
        PluginKind::Pricing => KindTemplates {
            rust: include_str!("../../templates/rust/src/pricing.rs"),
            js: include_str!("../../templates/js/src/pricing.ts"),
            fixtures: fixtures!("pricing", ["one-hour-on-two-gpus", "not-enough-free-gpus"]),
        },
        PluginKind::Scheduling => KindTemplates {
            rust: include_str!("../../templates/rust/src/scheduling.rs"),
            js: include_str!("../../templates/js/src/scheduling.ts"),
            fixtures: fixtures!("scheduling", ["first-free-gpus", "busy-host-defers"]),
        },
        PluginKind::Reporting => KindTemplates {
            rust: include_str!("../../templates/rust/src/reporting.rs"),
            js: include_str!("../../templates/js/src/reporting.ts"),
            fixtures: fixtures!(
                "reporting",
                ["per-tenant-totals", "end-before-start-is-invalid"]
            ),
        },
    }
}

/// Whether `name` is `[a-z][a-z0-9-]{0,63}`.
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && name.len() <= 64
        && bytes.all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

/// Fill `{{key}}` placeholders; every placeholder must be known.
fn render(
    template: &'static str,
    values: &[(&str, &str)],
    which: &'static str,
) -> Result<String, ScaffoldError> {
    let mut text = template.to_string();
    for (key, value) in values {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    if text.contains("{{") {
        return Err(ScaffoldError::Template(which));
    }
    Ok(text)
}

/// The `[config]` lines of the manifest: the fixtures' configuration as defaults.
fn config_lines(config_json: &'static str) -> Result<String, ScaffoldError> {
    let config: std::collections::BTreeMap<String, String> =
        serde_json::from_str(config_json).map_err(|_| ScaffoldError::Template("config.json"))?;
    Ok(config
        .iter()
        .map(|(key, value)| format!("{} = {}", toml_string(key), toml_string(value)))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn toml_string(text: &str) -> String {
    // JSON string escapes are valid TOML basic-string escapes.
    serde_json::to_string(text).unwrap_or_default()
}

/// The `devDependencies` of the examples' package.json, as JSON object members.
fn js_dev_dependencies() -> Result<String, ScaffoldError> {
    let package: serde_json::Value = serde_json::from_str(JS_EXAMPLES_PACKAGE_JSON)
        .map_err(|_| ScaffoldError::Template("examples/js/package.json"))?;
    let dependencies = package
        .get("devDependencies")
        .and_then(|value| value.as_object())
        .ok_or(ScaffoldError::Template("examples/js/package.json"))?;
    Ok(dependencies
        .iter()
        .map(|(name, version)| format!("    {}: {version}", toml_string(name)))
        .collect::<Vec<_>>()
        .join(",\n"))
}

fn write(
    dir: &Path,
    relative: &str,
    text: &str,
    written: &mut Vec<PathBuf>,
) -> Result<(), ScaffoldError> {
    let path = dir.join(relative);
    let io = |source| ScaffoldError::Io {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    fs::write(&path, text).map_err(io)?;
    written.push(path);
    Ok(())
}

/// Create the project; returns the files written.
pub fn scaffold(options: &ScaffoldOptions) -> Result<Vec<PathBuf>, ScaffoldError> {
    let name = options.name.as_str();
    if !valid_name(name) {
        return Err(ScaffoldError::InvalidName(name.to_string()));
    }
    let dir = &options.dir;
    if let Ok(mut entries) = fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(ScaffoldError::NotEmpty(dir.clone()));
    }
    let sdk_path = match options.language {
        Language::Rust => {
            let sdk = options.sdk_path.clone().unwrap_or_else(default_sdk_path);
            let sdk = fs::canonicalize(&sdk).map_err(|_| ScaffoldError::SdkMissing(sdk.clone()))?;
            if !sdk.join("Cargo.toml").is_file() {
                return Err(ScaffoldError::SdkMissing(sdk));
            }
            sdk.display().to_string()
        }
        Language::Js => String::new(),
    };
    let templates = kind_templates(options.kind);
    let fixture_config = templates
        .fixtures
        .iter()
        .find(|(file, _)| *file == "config.json")
        .map(|(_, text)| *text)
        .unwrap_or("{}");
    let first_fixture = templates
        .fixtures
        .iter()
        .find_map(|(file, _)| file.strip_suffix(".input.json"))
        .unwrap_or("basic");
    let kind = options.kind.as_str();
    let wit_version = HOST_WIT_VERSION.to_string();
    let crate_file = name.replace('-', "_");
    let config = config_lines(fixture_config)?;
    // A JavaScript engine's heap starts at several MiB, and a fresh instance (counted in
    // the call's CPU budget) takes milliseconds: give JS the host's memory maximum and
    // room above the 20 ms default.
    let (memory_bytes, cpu_ms) = match options.language {
        Language::Rust => ((32u64 << 20).to_string(), "20"),
        Language::Js => ((64u64 << 20).to_string(), "100"),
    };
    let dev_dependencies = js_dev_dependencies()?;
    let values: [(&str, &str); 10] = [
        ("name", name),
        ("kind", kind),
        ("wit_version", &wit_version),
        ("crate_file", &crate_file),
        ("sdk_path", &sdk_path),
        ("config", &config),
        ("memory_bytes", &memory_bytes),
        ("cpu_ms", cpu_ms),
        ("first_fixture", first_fixture),
        ("dev_dependencies", &dev_dependencies),
    ];
    let mut written = Vec::new();
    write(
        dir,
        "plugin.toml",
        &render(PLUGIN_TOML, &values, "plugin.toml")?,
        &mut written,
    )?;
    for (file, text) in templates.fixtures {
        write(dir, &format!("fixtures/{file}"), text, &mut written)?;
    }
    match options.language {
        Language::Rust => {
            let files: [(&str, &'static str, &'static str); 5] = [
                ("Cargo.toml", RUST_CARGO_TOML, "rust/Cargo.toml"),
                ("build.rs", RUST_BUILD_RS, "rust/build.rs"),
                ("src/lib.rs", templates.rust, "rust/src/KIND.rs"),
                ("README.md", RUST_README, "rust/README.md"),
                (".gitignore", RUST_GITIGNORE, "rust/gitignore"),
            ];
            for (file, template, which) in files {
                write(dir, file, &render(template, &values, which)?, &mut written)?;
            }
        }
        Language::Js => {
            let files: [(&str, &'static str, &'static str); 8] = [
                ("package.json", JS_PACKAGE_JSON, "js/package.json"),
                ("build.mjs", JS_BUILD_MJS, "examples/js/build.mjs"),
                ("tsconfig.json", JS_TSCONFIG, "examples/js/tsconfig.json"),
                ("src/plugin.ts", templates.js, "js/src/KIND.ts"),
                ("src/plinth.ts", JS_HELPERS, "examples/js/lib/plinth.ts"),
                ("wit/policy.wit", crate::wit::CURRENT, "wit/policy.wit"),
                ("README.md", JS_README, "js/README.md"),
                (".gitignore", JS_GITIGNORE, "js/gitignore"),
            ];
            for (file, template, which) in files {
                write(dir, file, &render(template, &values, which)?, &mut written)?;
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("my-pricing2"));
        for bad in ["", "My", "9lives", "a_b", "a.b", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn every_template_renders_for_every_kind_and_language() {
        let temp = tempfile::tempdir().unwrap();
        for kind in PluginKind::ALL {
            for language in [Language::Rust, Language::Js] {
                let dir = temp.path().join(format!("{kind}-{language}"));
                let written = scaffold(&ScaffoldOptions {
                    kind,
                    language,
                    name: format!("my-{kind}"),
                    dir: dir.clone(),
                    sdk_path: None,
                })
                .unwrap();
                assert!(written.len() >= 9, "{written:?}");
                let manifest = fs::read_to_string(dir.join("plugin.toml")).unwrap();
                let manifest: crate::Manifest = toml::from_str(&manifest).unwrap();
                assert_eq!(
                    (manifest.kind, manifest.name.as_str()),
                    (kind, format!("my-{kind}").as_str())
                );
                assert_eq!(manifest.wit, format!("plinth:policy@{HOST_WIT_VERSION}"));
                let config = crate::tools::fixture_config(&dir.join("fixtures")).unwrap();
                assert_eq!(
                    manifest.config, config,
                    "manifest defaults = fixture config"
                );
                if language == Language::Js {
                    let package: serde_json::Value = serde_json::from_str(
                        &fs::read_to_string(dir.join("package.json")).unwrap(),
                    )
                    .unwrap();
                    let examples: serde_json::Value =
                        serde_json::from_str(JS_EXAMPLES_PACKAGE_JSON).unwrap();
                    assert_eq!(package["devDependencies"], examples["devDependencies"]);
                    assert_eq!(
                        package["plinth"]["plugins"][0]["world"],
                        format!("{kind}-plugin")
                    );
                }
            }
        }
    }

    #[test]
    fn existing_projects_are_not_overwritten() {
        let temp = tempfile::tempdir().unwrap();
        fs::write(temp.path().join("keep.txt"), "mine").unwrap();
        let error = scaffold(&ScaffoldOptions {
            kind: PluginKind::Pricing,
            language: Language::Js,
            name: "x".to_string(),
            dir: temp.path().to_path_buf(),
            sdk_path: None,
        })
        .unwrap_err();
        assert!(matches!(error, ScaffoldError::NotEmpty(_)), "{error}");
        assert_eq!(
            fs::read_to_string(temp.path().join("keep.txt")).unwrap(),
            "mine"
        );
        let error = scaffold(&ScaffoldOptions {
            kind: PluginKind::Pricing,
            language: Language::Rust,
            name: "x".to_string(),
            dir: temp.path().join("new"),
            sdk_path: Some(temp.path().join("no-sdk-here")),
        })
        .unwrap_err();
        assert!(error.to_string().contains("--sdk-path"), "{error}");
    }
}
