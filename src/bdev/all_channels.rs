//! Settings and statistics over every channel of a bdev on every reactor: rate limits, the latency histogram, iostat counters.

use super::channel::{ChannelShared, CHANNELS};
use super::iostat::{self, IoStats};
use super::{histogram, qos, BdevHandle};
use crate::reactor;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};

/// Sets (or with all-zero limits, removes) `bdev`'s rate limits and pushes them to its
/// channels on every reactor; `done` runs on the calling reactor once all have them.
pub fn set_qos(bdev: &BdevHandle, limits: qos::QosLimits, done: impl FnOnce() + Send + 'static) {
    let q = (!limits.is_unlimited()).then(|| Arc::new(qos::Qos::new(limits)));
    *bdev.qos.lock().unwrap_or_else(|e| e.into_inner()) = q.clone();
    let bdev = bdev.clone();
    reactor::for_each_reactor(
        move || {
            CHANNELS.with(|c| {
                let chans: Vec<Rc<ChannelShared>> =
                    c.borrow().iter().filter_map(Weak::upgrade).collect();
                for ch in chans.iter().filter(|ch| Arc::ptr_eq(&ch.bdev, &bdev)) {
                    ch.set_qos(q.clone());
                }
            })
        },
        done,
    );
}

/// Enables (with `cfg`) or disables `bdev`'s latency histogram on every reactor, starting
/// from zero; `done` runs on the calling reactor once all channels have it.
pub fn set_histogram(
    bdev: &BdevHandle,
    cfg: Option<histogram::HistConfig>,
    done: impl FnOnce() + Send + 'static,
) {
    *bdev.histogram_lock() = cfg.map(histogram::Histogram::new);
    let bdev = bdev.clone();
    reactor::for_each_reactor(
        move || {
            for_local_channels(&bdev, |ch| {
                *ch.core.histogram.borrow_mut() =
                    cfg.map(|c| Box::new(histogram::Histogram::new(c)));
            })
        },
        done,
    );
}

/// `bdev`'s latency histogram merged over every channel on every reactor and those closed;
/// `None` when it is not enabled. `done` runs on the calling reactor.
pub fn collect_histogram(
    bdev: &BdevHandle,
    done: impl FnOnce(Option<histogram::Histogram>) + Send + 'static,
) {
    let Some(total) = bdev.histogram_lock().clone() else {
        return done(None);
    };
    let total = Arc::new(Mutex::new(total));
    let (each, bdev) = (total.clone(), bdev.clone());
    reactor::for_each_reactor(
        move || {
            for_local_channels(&bdev, |ch| {
                if let Some(h) = ch.core.histogram.borrow().as_ref() {
                    each.lock().unwrap_or_else(|e| e.into_inner()).merge(h);
                }
            })
        },
        move || {
            done(Some(
                total.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            ))
        },
    );
}

/// Runs `f` on each of this reactor's open channels of `bdev`.
pub(super) fn for_local_channels(bdev: &BdevHandle, mut f: impl FnMut(&Rc<ChannelShared>)) {
    let chans: Vec<Rc<ChannelShared>> =
        CHANNELS.with(|c| c.borrow().iter().filter_map(Weak::upgrade).collect());
    for ch in chans.iter().filter(|ch| Arc::ptr_eq(&ch.bdev, bdev)) {
        if ch.module.borrow().is_some() {
            f(ch);
        }
    }
}

/// Adds the statistics of `bdev`'s open channels on this reactor into `into`.
pub(crate) fn collect_local_stats(bdev: &BdevHandle, into: &mut IoStats) {
    collect_local_channel_stats(bdev, into);
}

/// Adds this reactor's channel statistics of `bdev` to `into`; false when it has no channel.
pub(crate) fn collect_local_channel_stats(bdev: &BdevHandle, into: &mut IoStats) -> bool {
    let mut found = false;
    CHANNELS.with(|c| {
        for ch in c.borrow().iter().filter_map(Weak::upgrade) {
            if Arc::ptr_eq(&ch.bdev, bdev) && ch.module.borrow().is_some() {
                into.merge(&ch.core.stats.borrow());
                found = true;
            }
        }
    });
    found
}

/// This reactor's open channels: each bdev's name and how many channels it has here.
pub(crate) fn local_channel_counts() -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    CHANNELS.with(|c| {
        for ch in c.borrow().iter().filter_map(Weak::upgrade) {
            if ch.module.borrow().is_none() {
                continue;
            }
            match counts.iter_mut().find(|(n, _)| n == ch.bdev.name()) {
                Some((_, n)) => *n += 1,
                None => counts.push((ch.bdev.name().to_string(), 1)),
            }
        }
    });
    counts
}

/// Resets this reactor's channel statistics of `bdev` (see `iostat::ResetMode`).
pub(crate) fn reset_local_stats(bdev: &BdevHandle, mode: iostat::ResetMode) {
    CHANNELS.with(|c| {
        for ch in c.borrow().iter().filter_map(Weak::upgrade) {
            if Arc::ptr_eq(&ch.bdev, bdev) && ch.module.borrow().is_some() {
                ch.core.stats.borrow_mut().reset(mode);
            }
        }
    })
}

/// Resets the statistics kept of `bdev`'s closed channels.
pub(crate) fn reset_closed_stats(bdev: &BdevHandle, mode: iostat::ResetMode) {
    bdev.closed_stats().reset(mode);
}

/// Statistics of channels already closed.
pub(crate) fn collect_closed_stats(bdev: &BdevHandle, into: &mut IoStats) {
    into.merge(&bdev.closed_stats());
}
