//! Prometheus metrics: an opt-in HTTP endpoint (`pollux --metrics-addr ADDR`) serving the
//! statistics of reactors, pollers, NVMe/TCP poll groups, subsystems, bdevs and the process
//! in the text exposition format at `/metrics`.
//!
//! Nothing here runs on a reactor: the server has threads of its own ([`http`]), reads the
//! statistics from the reactors by one message to the main reactor, as the stats RPCs do
//! ([`gather`]), and encodes them on its own thread ([`encode`]).

pub mod encode;
pub mod gather;
pub mod http;

pub use http::{start, MetricsServer};
