//! Fuzz target `data_spec`: see `cases_client::data_spec`.
#![no_main]

#[path = "../cases_client.rs"]
mod cases_client;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cases_client::data_spec(data));
