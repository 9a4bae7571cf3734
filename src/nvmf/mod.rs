//! nvmf: NVMe over Fabrics. This part holds the pure wire codec shared by the target and the
//! host: `spec` (NVMe / NVMe-oF structures, opcodes, status codes, Identify data, log
//! pages), `pdu` (NVMe/TCP PDUs, their encoders and the incremental, limit-checking
//! decoder) and `digest` (CRC32C header and data digests). Nothing here does I/O.

pub mod spec;
pub(crate) mod wire;

pub use wire::{ascii_field, field_str, nul_field, WireField};
pub mod digest;
pub mod host;
pub mod pdu;
