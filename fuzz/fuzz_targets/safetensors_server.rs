//! Fuzz target `safetensors_server`: see `cases::safetensors_server`.
#![no_main]

#[path = "../cases.rs"]
mod cases;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cases::safetensors_server(data));
