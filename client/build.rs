//! Gives cohort-client's tests and examples an rpath to libtorch (see build_support/rpath.rs).
include!("build_support/rpath.rs");

fn main() {
    emit_libtorch_rpath();
}
