//! Fuzz the agent's configuration layer parser and the environment-variable overrides:
//! any bytes must give a configuration or a `ConfigError`, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use plinth_agent::config::{self, ConfigSources};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = config::parse_layer(Path::new("fuzz.toml"), text);
    // The same text as the value of an override variable.
    let sources = ConfigSources {
        files: Vec::new(),
        dropin_dir: None,
        env: vec![("PLINTH_API_SOCKET_MODE".to_owned(), text.to_owned())],
    };
    if let Ok(loaded) = config::load(&sources) {
        let _ = loaded.config.validate();
    }
});
