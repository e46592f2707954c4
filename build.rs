//! Gives the shared library a soname, so that `make install` can lay out
//! libratelimit.so -> libratelimit.so.0 -> libratelimit.so.0.1.0 and programs
//! link against the ABI version, not the file.
//! Also declares the `fuzzing` cfg (see src/ffi/fault.rs).

fn main() {
    let target = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libratelimit.so.0");
    }
    // cargo-fuzz builds with `--cfg fuzzing`, which turns on the fault
    // injection of src/ffi/fault.rs; declared so that rustc knows the name.
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
    println!("cargo:rerun-if-changed=build.rs");
}
