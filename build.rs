//! Gives the `cohort` binaries an rpath to libtorch so they start from target/ without
//! LD_LIBRARY_PATH. The logic lives in `client/build_support/rpath.rs`, shared with cohort-client.
include!("client/build_support/rpath.rs");

fn main() {
    emit_libtorch_rpath();
}
