//! Fuzz target: the TLS PSK interchange format (`NVMeTLSkey-1:..`) and PSK identity parsers.
//! See `pollux_fuzz::tls::psk`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pollux_fuzz::tls::psk(data));
