//! Tools (soon).
