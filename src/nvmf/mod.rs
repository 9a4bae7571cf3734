//! NVMe over Fabrics: the wire layer, the NVMe/TCP target and the host.
//!
//! `wire` is the pure wire layer shared by the target, the host and the fuzzers: every NVMe
//! and NVMe/TCP structure as a `#[repr(C)]` little-endian type, the PDU codec and the
//! digests (`pdu` and `digest` are re-exported here). The target on top of it: `target` (the
//! registry on the main reactor and its snapshots pushed to every reactor, acceptors),
//! `subsystem` (subsystems, namespaces, hosts, listeners, the controller directory,
//! discovery), `ana` (Asymmetric Namespace Access: per-listener group states, the ANA log
//! page, path statuses), `target_ctrlr` (the target's controller: admin commands, properties,
//! features, log pages, keep-alive, AER), `io` (NVMe I/O commands mapped to bdev I/O),
//! `reservation` / `reservation_wire` / `reservation_target` (NVMe reservations: the state
//! machine, the commands and notification log, the changes applied on the main reactor and
//! persisted), `tcp`
//! (per-reactor poll groups and the queue pairs: `protocol`, `rx`, `rx_landing`, `tx`,
//! `connect`, `dispatch`, `view`), `pdu_tx` (PDU headers encoded into socket write chunks), `referral` (discovery
//! referrals)
//! and `rpc` (SPDK's nvmf_* methods and the default export). `host` is the initiator used by
//! the tests and pollux-perf.

pub mod wire;

pub use wire::{ascii_field, digest, field_str, nul_field, pdu};
pub mod ana;
pub mod auth;
pub mod host;
pub mod io;
pub mod target_ctrlr;

pub mod pdu_tx;
pub mod psk;
pub mod referral;
pub mod reservation;
pub mod reservation_target;
pub mod reservation_wire;
pub mod rpc;
pub mod secret;
pub mod subsystem;
pub mod target;
pub mod tcp;
