//! Fuzz target `frame`: see `cases::frame`.
#![no_main]

#[path = "../cases.rs"]
mod cases;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cases::frame(data));
