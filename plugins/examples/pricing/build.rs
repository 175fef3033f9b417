//! Link the plugin with a 64 KiB shadow stack (Rust's default is 1 MiB): everything the
//! plugin touches then sits in the first few pages of its linear memory, which makes a
//! fresh instance cheaper (fewer page faults, and the host keeps those pages resident).
fn main() {
    println!("cargo:rustc-link-arg-cdylib=-zstack-size=65536");
}
