//! plinth-verify (being wired up).

fn main() {}
