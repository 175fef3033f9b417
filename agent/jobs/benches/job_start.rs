//! Job start benchmark (placeholder).
fn main() {}
