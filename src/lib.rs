//! pollux: a polled-mode storage application framework.
//!
//! Reactors pinned to cores poll sockets (posix or io_uring) and block devices without
//! blocking; an NVMe-oF/TCP target runs as pollers on them; a JSON-RPC Unix socket
//! reconfigures everything live. See DESIGN.md (in the shared folder) for the data path and
//! the rules of the house.
//!
//! Layers, lowest first: `sys` (every system call, the only home of syscall `unsafe`) and
//! `buf` (I/O buffers and the chunks sent from them), `keyring` (named secrets in files); `reactor` (per-core event loops; it
//! knows no transport); `sock` (posix and io_uring sockets) and `bdev` (block devices; they
//! know no network); `nvmf` (the NVMe/TCP codec, the target and the host) and `rpc` (the
//! JSON-RPC control plane); `app` and `log` tie them together for the binaries.
//! `alloc_count` is the counting allocator of the zero-allocation checks. `metrics` (the
//! Prometheus endpoint) and `service` (systemd's readiness protocol) serve operators.

// Modules that need no `unsafe` forbid it here, whole (their files need not repeat it);
// the others confine it to their syscall and ring-memory wrappers (see README "Layout").
pub mod alloc_count;
#[forbid(unsafe_code)]
pub mod app;
pub mod bdev;
pub mod buf;
#[forbid(unsafe_code)]
pub mod keyring;
#[forbid(unsafe_code)]
pub mod log;
#[forbid(unsafe_code)]
pub mod metrics;
#[forbid(unsafe_code)]
pub mod nvmf;
#[forbid(unsafe_code)]
pub mod reactor;
#[forbid(unsafe_code)]
pub mod rpc;
#[forbid(unsafe_code)]
pub mod service;
pub mod sock;
pub mod sys;
