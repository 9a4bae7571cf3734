//! Fuzz target: the target's command dispatcher fed decoded capsules (fabrics, admin and
//! I/O SQEs with arbitrary fields and in-capsule data) through its socket-free entry
//! points, one controller per input. See `pollux_fuzz::capsule_dispatch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pollux_fuzz::capsule_dispatch::check(data));
