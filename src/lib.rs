//! pollux: a polled-mode storage application framework. Reactors pinned to cores poll
//! sockets (posix or io_uring) and block devices without blocking; an NVMe-oF/TCP target runs
//! as pollers on them; a JSON-RPC Unix socket reconfigures everything live. See DESIGN.md
//! (in the shared folder) for the data path and the rules of the house.

pub mod alloc_count;
pub mod app;
pub mod bdev;
pub mod buf;
pub mod log;
pub mod nvmf;
pub mod reactor;
pub mod rpc;
pub mod sock;
pub mod sys;
