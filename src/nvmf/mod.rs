//! nvmf: NVMe over Fabrics. The pure wire codec shared by the target and the host: `spec`
//! (NVMe / NVMe-oF structures, opcodes, status codes, Identify data, log pages), `pdu`
//! (NVMe/TCP PDUs, their encoders and the incremental, limit-checking decoder) and `digest`
//! (CRC32C header and data digests). The NVMe-oF/TCP target on top of it: `target` (the
//! registry on the main reactor and its snapshots pushed to every reactor, acceptors),
//! `subsystem` (subsystems, namespaces, hosts, listeners, the controller directory,
//! discovery), `ctrlr` (admin commands, properties, features, log pages, keep-alive, AER),
//! `io` (NVMe I/O commands mapped to bdev I/O), `tcp` (per-reactor poll groups and the
//! queue-pair state machine), `landing` (in-capsule write data received straight into the
//! commands' buffers) and `rpc` (SPDK's nvmf_* methods and the default export).

pub mod wire;

pub use wire::{ascii_field, digest, field_str, nul_field, pdu};
pub mod ctrlr;
pub mod host;
pub mod io;
mod landing;
pub mod pdu_tx;
pub mod rpc;
pub mod subsystem;
pub mod target;
pub mod tcp;
