//! Fuzz target: the JSON-RPC server's stream framing (`rpc::server::frame_requests`) and
//! request validation, fed whole and in arbitrary splits. See `pollux_fuzz::rpc_framing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pollux_fuzz::rpc_framing::check(data));
