//! Integration tests of the plugin host against plugins built from plugins/examples.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod examples;
mod facts;
mod hostile;
mod javascript;
mod packages;
mod support;
mod versioning;
