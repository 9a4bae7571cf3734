//! Latency histograms of a bdev in SPDK's encoded format (`bdev_enable_histogram`,
//! `bdev_get_histogram`), kept per channel while enabled and merged on demand.
//!
//! The layout is SPDK's `spdk_histogram_data`: `65 - granularity` ranges of
//! `2^granularity` counters each; range 0 counts the values 0 .. 2^g - 1 one per counter,
//! range r > 0 the values 2^(r+g-1) .. 2^(r+g) - 1 in counters 2^(r-1) wide. Values are
//! latencies in ticks of 1 ns (`tsc_rate` 1e9). `bdev_get_histogram` answers the counters as
//! base64 of little-endian u64s with `bucket_shift` / `granularity`, `min_range` 0,
//! `max_range` (the number of ranges) and `tsc_rate`, which SPDK's histogram tools decode.
//! Differences from SPDK: every range is always kept (`min_range` is 0, `max_range` all of
//! them); `min_nsec` / `max_nsec` clamp each value into that interval instead of dropping
//! the ranges outside it. A channel's histogram (58 KiB at the default granularity 7) is
//! allocated only while the bdev's histogram is enabled; recording allocates nothing.

#![forbid(unsafe_code)]

use super::IoType;
use base64::Engine;

/// SPDK's default bucket shift.
pub const DEFAULT_GRANULARITY: u32 = 7;
/// Finest granularity accepted (2^12 counters a range: 1.7 MiB a channel).
pub const MAX_GRANULARITY: u32 = 12;

/// What a histogram records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistConfig {
    pub granularity: u32,
    /// Only this I/O type (all when `None`).
    pub opc: Option<IoType>,
    pub min_ns: u64,
    pub max_ns: u64,
}

impl Default for HistConfig {
    fn default() -> Self {
        HistConfig {
            granularity: DEFAULT_GRANULARITY,
            opc: None,
            min_ns: 0,
            max_ns: u64::MAX,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Histogram {
    cfg: HistConfig,
    counts: Vec<u64>,
}

impl Histogram {
    pub fn new(cfg: HistConfig) -> Histogram {
        let n = Self::ranges_of(cfg.granularity) << cfg.granularity;
        Histogram {
            cfg,
            counts: vec![0; n],
        }
    }

    fn ranges_of(granularity: u32) -> usize {
        (64 - granularity as usize) + 1
    }

    pub fn ranges(&self) -> usize {
        Self::ranges_of(self.cfg.granularity)
    }

    pub fn config(&self) -> HistConfig {
        self.cfg
    }

    /// Counts one completed I/O of type `t` that took `ns`.
    pub fn tally(&mut self, t: IoType, ns: u64) {
        if self.cfg.opc.is_some_and(|o| o != t) {
            return;
        }
        let v = ns.clamp(self.cfg.min_ns, self.cfg.max_ns);
        let g = self.cfg.granularity;
        let lsb = 64 - g;
        let clz = v.leading_zeros();
        let range = lsb.saturating_sub(clz);
        let shift = range.saturating_sub(1);
        let index = (v >> shift) & ((1u64 << g) - 1);
        let slot = ((range as usize) << g) + index as usize;
        if let Some(c) = self.counts.get_mut(slot) {
            *c += 1;
        }
    }

    /// Adds `other`'s counts (same configuration; a different one is ignored).
    pub fn merge(&mut self, other: &Histogram) {
        if other.cfg.granularity != self.cfg.granularity {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The counters as SPDK encodes them: base64 of little-endian u64s.
    pub fn encode(&self) -> String {
        let bytes: Vec<u8> = self.counts.iter().flat_map(|c| c.to_le_bytes()).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// The first value of the counter after (`range`, `index`) (SPDK's bucket start), for
    /// decoding.
    pub fn bucket_end(&self, range: u32, index: u32) -> u64 {
        let g = self.cfg.granularity;
        let index = u64::from(index) + 1;
        if range > 0 {
            (1u64 << (range + g - 1)).saturating_add(index << (range - 1))
        } else {
            index
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes as SPDK's tools do: every counter with the value interval it covers.
    fn decode(h: &Histogram, encoded: &str) -> Vec<(u64, u64, u64)> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let per_range = 1u32 << h.cfg.granularity;
        let mut out = Vec::new();
        let mut start = 0;
        for (i, c) in bytes.chunks_exact(8).enumerate() {
            let (range, index) = (i as u32 / per_range, i as u32 % per_range);
            let end = h.bucket_end(range, index);
            let count = u64::from_le_bytes(c.try_into().unwrap());
            if count > 0 {
                out.push((start, end, count));
            }
            start = end;
        }
        out
    }

    #[test]
    fn values_land_in_the_counter_that_covers_them() {
        let mut h = Histogram::new(HistConfig::default());
        assert_eq!(h.ranges(), 58);
        let values = [
            0u64,
            1,
            127,
            128,
            255,
            256,
            1000,
            12_345,
            1_000_000,
            3_000_000_000,
        ];
        for v in values {
            h.tally(IoType::Read, v);
        }
        let decoded = decode(&h, &h.encode());
        assert_eq!(
            decoded.iter().map(|d| d.2).sum::<u64>(),
            values.len() as u64
        );
        for v in values {
            assert!(
                decoded.iter().any(|(s, e, _)| *s <= v && v < *e),
                "{v} in {decoded:?}"
            );
        }
    }

    #[test]
    fn opc_filter_clamping_and_merge() {
        let cfg = HistConfig {
            granularity: 4,
            opc: Some(IoType::Write),
            min_ns: 100,
            max_ns: 1000,
        };
        let mut a = Histogram::new(cfg);
        a.tally(IoType::Read, 500);
        a.tally(IoType::Write, 5);
        a.tally(IoType::Write, 1_000_000);
        assert_eq!(a.total(), 2, "reads are not counted");
        let d = decode(&a, &a.encode());
        assert!(d.iter().any(|(s, e, _)| *s <= 100 && 100 < *e), "{d:?}");
        assert!(d.iter().any(|(s, e, _)| *s <= 1000 && 1000 < *e), "{d:?}");
        let mut b = Histogram::new(cfg);
        b.merge(&a);
        b.merge(&a);
        assert_eq!(b.total(), 4);
        b.merge(&Histogram::new(HistConfig::default()));
        assert_eq!(b.total(), 4, "another granularity is not merged");
    }
}
