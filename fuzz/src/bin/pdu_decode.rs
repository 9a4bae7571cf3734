//! Fuzz target: the NVMe/TCP PDU decoder in both roles, fed whole and in arbitrary splits
//! (also through the direct-data path), cross-checked against itself and against a
//! re-encode / re-decode round trip. See `pollux_fuzz::pdu`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pollux_fuzz::pdu::check(data));
