//! Gives the shared library a soname, so that `make install` can lay out
//! libratelimit.so -> libratelimit.so.0 -> libratelimit.so.0.1.0 and programs
//! link against the ABI version, not the file.

fn main() {
    let target = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libratelimit.so.0");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
