//! The block device layer.
//!
//! A module (malloc, null, uring, aio, delay, error, passthru) implements [`Bdev`];
//! [`register`] publishes it under a unique name (and aliases) in a registry that lives on
//! the main reactor and is pushed to every other reactor by message, so [`lookup`] and
//! [`open`] work on any reactor without locks on the data path. A user opens a [`Desc`] (with
//! an event callback for hot remove and resize), may [`Desc::claim`] it exclusively, and
//! opens an [`IoChannel`] per reactor: I/O is submitted and completed on that reactor only. A
//! [`BdevIo`] carries offset/length in blocks, a scatter list of owned [`IoBuf`]s and a
//! caller token; it is moved in on submit and handed back whole on completion to the
//! [`IoSink`] registered once at channel open, so steady-state I/O allocates nothing.
//! **Completion rule:** a completion is never delivered inside `IoChannel::submit` (a module
//! completing synchronously, or a rejected I/O, is queued and delivered from the channel's
//! poller on the same reactor); every I/O is delivered exactly once, also after the channel
//! was closed. Out-of-range I/O (LBA + count overflow included), unsupported types and
//! scatter lists whose size does not match the length are rejected before reaching a module.
//! `NoMem` from a module is never shown to the user: the channel retries it when another I/O
//! completes or on its next poll. [`IoStatus::nvme`] maps statuses to NVMe SCT/SC for the
//! NVMe-oF target. Deleting a bdev with users is allowed ([`unregister`]): it disappears from
//! lookups, every descriptor gets [`BdevEvent::Remove`] on its reactor, in-flight I/O
//! completes normally, new I/O fails with `Aborted`, and once the last descriptor closes the
//! module's `destruct` runs and the deletion completes.
//!
//! For a frontend such as the NVMe-oF target: on the main reactor, `open(name, on_event)`
//! and `claim("nvmf")` when a namespace is added (`on_event(Remove)` → remove the
//! namespace, drop its channels, then the `Desc`); on each poll-group reactor, open one
//! `IoChannel` per namespace with a sink (`Rc<dyn IoSink>`) shared by that reactor's qpairs,
//! keep a pool of `BdevIo`s whose `token` names the request (qpair slot, command id), move a
//! `BdevIo` into `submit` with `IoBuf`s for the data, and in `io_done` map `io.status().nvme()`
//! into the CQE and recycle the `BdevIo` and its buffers. A sink may submit again from
//! `io_done`. Latency in iostat is timed per layer (stacked bdevs: each layer from its own
//! submit). Read data of a malloc bdev can later be sent without a copy through
//! `handle.module_as::<malloc::MallocBdev>()` and its `Arc`'d `MallocRegion`.
//!
//! **Cost per object** (measured by bench/scale.sh, one reactor): a registered null bdev
//! ~0.8 KiB in all (its handle, info and statistics of closed channels, ~300 B while it has
//! seen no I/O, plus one name entry per reactor); a malloc bdev that much beyond its data.
//! An [`IoChannel`] costs ~1 KiB while idle (its queues start empty and grow to the depth
//! the I/O needs; its latency histograms, ~62 KiB, come with its first read or write):
//! users open channels only while they do I/O (the NVMe-oF target: while an I/O queue of
//! the namespace's subsystem is connected on that reactor).

//!
//! Files: `io.rs` (the request, its types and statuses), `module.rs` (the traits a module
//! implements), `registry.rs` (registered bdevs and the name registry), `desc.rs`
//! (descriptors and claims), `channel.rs` (the per-reactor I/O path), `all_channels.rs`
//! (rate limits, histograms and statistics over a bdev's channels).

pub mod aio;
mod all_channels;
mod channel;
pub mod compare;
pub mod delay;
mod desc;
pub mod error;
pub mod histogram;
mod io;
pub mod iostat;
pub mod malloc;
mod module;
pub mod null;
pub mod passthru;
pub mod qos;
pub mod range_lock;
pub mod rbd;
mod registry;
pub mod rpc;
pub mod split;
pub mod stack;
pub mod uring;
pub mod util;

#[cfg(test)]
mod tests;

use all_channels::for_local_channels;
pub(crate) use all_channels::{
    collect_closed_stats, collect_local_channel_stats, collect_local_stats, local_channel_counts,
    reset_closed_stats, reset_local_stats,
};
pub use all_channels::{collect_histogram, set_histogram, set_qos};
use channel::ChannelShared;
pub use channel::{Completer, IoChannel};
pub use desc::{open, open_handle, BdevEvent, Desc};
pub use io::{BdevIo, IoSink, IoStatus, IoType, IoTypes, NvmeStatus, SharedRange};
pub use module::{Bdev, BdevError, BdevInfo, ModuleChannel};
pub(crate) use registry::clear_registry;
pub use registry::{list, lookup, register, unregister, BdevHandle, BdevHandleInner};
pub use util::{parse_uuid, random_uuid};
