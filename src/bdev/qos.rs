//! QoS: rate limits of one bdev (SPDK's `bdev_set_qos_limit`) enforced across all its
//! channels on all reactors by shared token buckets.
//!
//! Each limit (I/O per second; read+write, read-only and write-only bytes per second) is a
//! bucket of tokens that refills at its rate, computed from the reactor's loop time (no
//! clock read per I/O) and capped at 10 ms worth, so a burst after a pause stays small. An
//! I/O is admitted when every bucket it draws from holds a positive balance, and then takes
//! its full cost (a large I/O may leave a bucket in debt, which the next refills repay).
//! Buckets are atomics shared by every reactor's channels: a few atomic operations per I/O,
//! only on bdevs that have a limit (a channel without QoS never touches them). I/O that is
//! not admitted waits in its channel, in order, and is released by the channel's 1 ms QoS
//! poller; the limits hold for the sum of all reactors, whatever their share of the load.

#![forbid(unsafe_code)]

use super::{BdevIo, IoType};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often a channel with waiting I/O looks at the buckets again.
pub const RELEASE_PERIOD: Duration = Duration::from_millis(1);
/// Most a bucket saves up: this much time at its rate.
const BURST: Duration = Duration::from_millis(10);

/// The limits as SPDK names them; 0 = no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosLimits {
    pub rw_ios_per_sec: u64,
    pub rw_mbytes_per_sec: u64,
    pub r_mbytes_per_sec: u64,
    pub w_mbytes_per_sec: u64,
}

impl QosLimits {
    pub fn is_unlimited(&self) -> bool {
        *self == QosLimits::default()
    }
}

/// A token bucket shared by every reactor.
struct Bucket {
    /// Tokens per second.
    rate: u64,
    cap: i64,
    tokens: AtomicI64,
    /// Nanoseconds (since `epoch()`) up to which refills were credited.
    credited_ns: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Bucket {
    fn new(rate: u64, now_ns: u64) -> Self {
        let cap = ((rate as u128 * BURST.as_nanos()) / 1_000_000_000).max(1) as i64;
        Bucket {
            rate,
            cap,
            tokens: AtomicI64::new(cap),
            credited_ns: AtomicU64::new(now_ns),
        }
    }

    /// Credits the tokens earned since the last refill. Only whole tokens are credited, and
    /// the credited time advances by exactly what they are worth, so no fraction is lost.
    fn refill(&self, now_ns: u64) {
        let last = self.credited_ns.load(Ordering::Acquire);
        if now_ns <= last {
            return;
        }
        let earned = (self.rate as u128 * (now_ns - last) as u128) / 1_000_000_000;
        if earned == 0 {
            return;
        }
        let worth = (earned * 1_000_000_000 / self.rate as u128) as u64;
        if self
            .credited_ns
            .compare_exchange(last, last + worth, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // another reactor credited this interval
        }
        let earned = earned.min(i64::MAX as u128) as i64;
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(earned).min(self.cap))
            });
        // Idle for long: do not let the credited time lag (it would be repaid as a burst).
        let lag = now_ns.saturating_sub(last + worth);
        if lag > BURST.as_nanos() as u64 {
            let _ = self.credited_ns.compare_exchange(
                last + worth,
                now_ns,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    fn positive(&self) -> bool {
        self.tokens.load(Ordering::Acquire) > 0
    }

    fn take(&self, cost: u64) {
        self.tokens
            .fetch_sub(cost.min(i64::MAX as u64) as i64, Ordering::AcqRel);
    }
}

/// The buckets of one bdev's limits.
pub struct Qos {
    limits: QosLimits,
    ios: Option<Bucket>,
    rw_bytes: Option<Bucket>,
    r_bytes: Option<Bucket>,
    w_bytes: Option<Bucket>,
}

impl Qos {
    pub fn new(limits: QosLimits) -> Qos {
        let now = now_ns();
        let bucket = |rate: u64| (rate > 0).then(|| Bucket::new(rate, now));
        let mb = |v: u64| v.saturating_mul(1 << 20);
        Qos {
            limits,
            ios: bucket(limits.rw_ios_per_sec),
            rw_bytes: bucket(mb(limits.rw_mbytes_per_sec)),
            r_bytes: bucket(mb(limits.r_mbytes_per_sec)),
            w_bytes: bucket(mb(limits.w_mbytes_per_sec)),
        }
    }

    pub fn limits(&self) -> QosLimits {
        self.limits
    }

    /// Admits `io` (taking its cost) if every bucket it draws from has a positive balance.
    pub fn admit(&self, io: &BdevIo, block_size: u64) -> bool {
        let bytes = io.num_blocks.saturating_mul(block_size);
        let (rw, dir) = match io.io_type {
            IoType::Read => (Some(bytes), self.r_bytes.as_ref()),
            IoType::Write => (Some(bytes), self.w_bytes.as_ref()),
            _ => (None, None),
        };
        let rw_bucket = rw.and(self.rw_bytes.as_ref());
        let drawn = [self.ios.as_ref(), rw_bucket, dir];
        let now = now_ns();
        for b in drawn.iter().flatten() {
            b.refill(now);
            if !b.positive() {
                return false;
            }
        }
        if let Some(b) = &self.ios {
            b.take(1);
        }
        for b in [rw_bucket, dir].iter().flatten() {
            b.take(bytes);
        }
        true
    }
}

/// The reactor's loop time as nanoseconds since the first QoS use.
fn now_ns() -> u64 {
    crate::reactor::now()
        .saturating_duration_since(epoch())
        .as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_credits_whole_tokens_without_losing_fractions() {
        let b = Bucket::new(1000, 0);
        assert_eq!(b.cap, 10);
        b.take(10);
        // 1000 refills 0.5 ms apart: exactly 500 tokens over 500 ms, minus what was taken.
        for i in 1..=1000u64 {
            b.refill(i * 500_000);
            if b.positive() {
                b.take(1);
            }
        }
        let left = b.tokens.load(Ordering::Relaxed);
        assert!((0..=1).contains(&left), "{left}");
    }

    #[test]
    fn burst_is_capped_after_idling() {
        let b = Bucket::new(1000, 0);
        b.refill(60_000_000_000);
        assert_eq!(b.tokens.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn limits_pick_the_buckets() {
        let q = Qos::new(QosLimits {
            w_mbytes_per_sec: 1,
            ..Default::default()
        });
        let read = BdevIo::new(IoType::Read, 0, 8);
        let write = BdevIo::new(IoType::Write, 0, 2048);
        for _ in 0..100 {
            assert!(q.admit(&read, 512), "reads are not limited");
        }
        assert!(q.admit(&write, 512), "the first write takes the balance");
        assert!(!q.admit(&write, 512), "in debt: the next waits");
        assert!(QosLimits::default().is_unlimited());
    }
}
