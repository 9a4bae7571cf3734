//! Fuzz target: every registered RPC method's parameter decoding, called through
//! `rpc::call` on an in-process single-reactor application. See `pollux_fuzz::rpc_params`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pollux_fuzz::rpc_params::check(data));
