// Shared by the build scripts of `cohort` and `cohort-client` (via `include!`): libtorch lives in
// the project's venv, not in a system path, so every binary, test and example that links it gets
// an rpath to its canonical lib folder. `LIBTORCH` comes from .cargo/config.toml or the caller.
fn emit_libtorch_rpath() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        println!(
            "cargo:warning=LIBTORCH is not set; binaries will need LD_LIBRARY_PATH to find libtorch"
        );
        return;
    };
    let lib = std::path::Path::new(&libtorch).join("lib");
    let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
