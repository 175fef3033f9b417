//! Jobs run by the real OCI runtime.
