//! Link the plugin with a 64 KiB shadow stack (Rust's default is 1 MiB): everything the
//! plugin touches then sits in the first pages of its linear memory, which the host keeps
//! resident, so a fresh instance is cheaper. Raise it if the plugin recurses deeply.
fn main() {
    println!("cargo:rustc-link-arg-cdylib=-zstack-size=65536");
}
