//! Integration tests of plinth-jobs: image import against hostile layers,
//! and jobs run by the real OCI runtime (runc) with a busybox rootfs built
//! by the tests themselves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod images;
mod run;
