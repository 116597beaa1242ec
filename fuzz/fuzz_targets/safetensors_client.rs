//! Fuzz target `safetensors_client`: see `cases_client::safetensors_client`.
#![no_main]

#[path = "../cases_client.rs"]
mod cases_client;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cases_client::safetensors_client(data));
