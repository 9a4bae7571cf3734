//! NVMe in-band authentication (DH-HMAC-CHAP): its messages, the DH groups, and both sides of a transaction as plain state machines.
//!
//! `messages` (the wire layer's `wire/auth.rs`) encodes and decodes the AUTH_Send / AUTH_Receive payloads (Negotiate,
//! Challenge, Reply, Success1, Success2, Failure1/2) with every length checked before use;
//! `ffdhe.rs` holds RFC 7919's groups; `dhchap.rs` runs a transaction as the controller
//! (what the target does on each queue) and as the host (pollux's host library and tests).

pub mod dhchap;
pub mod ffdhe;
pub use crate::nvmf::wire::auth as messages;
