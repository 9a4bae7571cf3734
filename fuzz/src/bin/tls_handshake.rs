//! Fuzz target: the server side of a TLS 1.3 PSK handshake fed arbitrary bytes in arbitrary
//! pieces (what a secure-channel listener does first with a peer's bytes). See
//! `pollux_fuzz::tls::handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pollux_fuzz::tls::handshake(data));
