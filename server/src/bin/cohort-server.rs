//! The `cohort-server` binary: the aggregation server, deployable without libtorch.

fn main() {
    eprintln!(
        "cohort-server {}: the HTTPS service is not built yet (see issue \"Aggregation server\")",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
