//! Fuzz target: DH-HMAC-CHAP messages through the decoder and both sides' transactions.
//! See `pollux_fuzz::auth`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pollux_fuzz::auth::check(data));
