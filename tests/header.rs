//! include/ratelimit.h must be exactly what cbindgen makes of src/ today.
//! `make header` (RL_UPDATE_HEADER=1) rewrites it.

use std::path::Path;

#[test]
fn header_is_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen could not read src/")
        .write(&mut generated);
    let path = root.join("include/ratelimit.h");
    if std::env::var_os("RL_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("writing include/ratelimit.h");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(committed == generated, "include/ratelimit.h is stale: run `make header` and commit the result");
}
