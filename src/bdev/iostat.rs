//! I/O statistics of a bdev, per channel and merged on demand.
//!
//! They are kept per channel (so the data path touches only its own reactor's counters) and
//! merged on demand for `bdev_get_iostat`: per I/O type the successful operations, bytes and
//! latency (total/min/max in ticks of 1 ns), failed operations, and an hdrhistogram of read and
//! write latency for p50/p99.
//!
//! Histograms are allocated once per channel; recording allocates nothing.

#![forbid(unsafe_code)]

use super::IoType;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// Ticks per second of every latency value here (ticks are nanoseconds).
pub const TICK_RATE: u64 = 1_000_000_000;
/// Highest latency the histograms track (longer ones are clamped): 60 s.
const MAX_TRACKED_NS: u64 = 60_000_000_000;

/// What a statistics reset clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResetMode {
    /// Nothing.
    #[default]
    None,
    /// Every counter and histogram.
    All,
    /// The minimum and maximum latencies.
    MaxMin,
    /// The error counts.
    Error,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct TypeStats {
    pub ops: u64,
    pub bytes: u64,
    pub errors: u64,
    pub latency_total: u64,
    pub latency_min: u64,
    pub latency_max: u64,
}

/// Counters per I/O type, and read and write latency histograms.
///
/// The two histograms (HDR, 1 ns..60 s at 2 significant digits: ~31 KiB each) are
/// allocated with the first read or write recorded or merged, not with the statistics: a
/// bdev's closed-channel totals and a channel that never did I/O cost ~300 B, not ~62 KiB
/// (a channel allocates them once, on its first I/O, like its other warm-up state).
#[derive(Debug, Clone)]
pub struct IoStats {
    pub per_type: [TypeStats; IoType::COUNT],
    hists: Option<Box<Hists>>,
}

#[derive(Debug, Clone)]
struct Hists {
    read: Histogram<u64>,
    write: Histogram<u64>,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, 2).expect("static histogram bounds")
}

impl Default for IoStats {
    fn default() -> Self {
        Self::new()
    }
}

impl IoStats {
    pub fn new() -> Self {
        Self {
            per_type: [TypeStats::default(); IoType::COUNT],
            hists: None,
        }
    }

    fn hists(&mut self) -> &mut Hists {
        self.hists.get_or_insert_with(|| {
            Box::new(Hists {
                read: new_hist(),
                write: new_hist(),
            })
        })
    }

    /// The read latency histogram (`None`: no read or write recorded yet).
    pub fn read_hist(&self) -> Option<&Histogram<u64>> {
        self.hists.as_ref().map(|h| &h.read)
    }

    /// The write latency histogram (`None`: no read or write recorded yet).
    pub fn write_hist(&self) -> Option<&Histogram<u64>> {
        self.hists.as_ref().map(|h| &h.write)
    }

    pub fn record(&mut self, t: IoType, bytes: u64, latency_ns: u64) {
        let s = &mut self.per_type[t.index()];
        s.ops += 1;
        s.bytes += bytes;
        s.latency_total += latency_ns;
        s.latency_max = s.latency_max.max(latency_ns);
        s.latency_min = if s.ops == 1 {
            latency_ns
        } else {
            s.latency_min.min(latency_ns)
        };
        let clamped = latency_ns.clamp(1, MAX_TRACKED_NS);
        match t {
            IoType::Read => self.hists().read.saturating_record(clamped),
            IoType::Write => self.hists().write.saturating_record(clamped),
            _ => {}
        }
    }

    pub fn record_error(&mut self, t: IoType) {
        self.per_type[t.index()].errors += 1;
    }

    pub fn merge(&mut self, other: &IoStats) {
        for (a, b) in self.per_type.iter_mut().zip(other.per_type.iter()) {
            if b.ops > 0 {
                a.latency_min = if a.ops == 0 {
                    b.latency_min
                } else {
                    a.latency_min.min(b.latency_min)
                };
            }
            a.ops += b.ops;
            a.bytes += b.bytes;
            a.errors += b.errors;
            a.latency_total += b.latency_total;
            a.latency_max = a.latency_max.max(b.latency_max);
        }
        // Same bounds on both sides: adding cannot fail.
        if let Some(o) = &other.hists {
            let h = self.hists();
            let _ = h.read.add(&o.read);
            let _ = h.write.add(&o.write);
        }
    }

    pub fn clear(&mut self) {
        self.per_type = [TypeStats::default(); IoType::COUNT];
        if let Some(h) = self.hists.as_mut() {
            h.read.reset();
            h.write.reset();
        }
    }

    /// Resets what `mode` names (SPDK's `reset_mode` of `bdev_get_iostat` and `mode` of
    /// `bdev_reset_iostat`).
    pub fn reset(&mut self, mode: ResetMode) {
        match mode {
            ResetMode::None => {}
            ResetMode::All => self.clear(),
            ResetMode::MaxMin => {
                for t in &mut self.per_type {
                    t.latency_max = 0;
                    t.latency_min = 0;
                }
            }
            ResetMode::Error => {
                for t in &mut self.per_type {
                    t.errors = 0;
                }
            }
        }
    }

    fn get(&self, t: IoType) -> &TypeStats {
        &self.per_type[t.index()]
    }

    /// The bdev's entry of `bdev_get_iostat` (SPDK's field names, plus p50/p99 and per-type
    /// error counts).
    pub fn to_json(&self, name: &str) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(name));
        let r = self.get(IoType::Read);
        let w = self.get(IoType::Write);
        let u = self.get(IoType::Unmap);
        let z = self.get(IoType::WriteZeroes);
        let f = self.get(IoType::Flush);
        m.insert("bytes_read".into(), json!(r.bytes));
        m.insert("num_read_ops".into(), json!(r.ops));
        m.insert("bytes_written".into(), json!(w.bytes));
        m.insert("num_write_ops".into(), json!(w.ops));
        m.insert("bytes_unmapped".into(), json!(u.bytes));
        m.insert("num_unmap_ops".into(), json!(u.ops));
        m.insert("bytes_copied".into(), json!(0));
        m.insert("num_copy_ops".into(), json!(0));
        m.insert("bytes_zeroed".into(), json!(z.bytes));
        m.insert("num_write_zeroes_ops".into(), json!(z.ops));
        m.insert("num_flush_ops".into(), json!(f.ops));
        for (prefix, s) in [("read", r), ("write", w), ("unmap", u)] {
            m.insert(format!("{prefix}_latency_ticks"), json!(s.latency_total));
            m.insert(format!("max_{prefix}_latency_ticks"), json!(s.latency_max));
            m.insert(format!("min_{prefix}_latency_ticks"), json!(s.latency_min));
        }
        m.insert("copy_latency_ticks".into(), json!(0));
        m.insert("max_copy_latency_ticks".into(), json!(0));
        m.insert("min_copy_latency_ticks".into(), json!(0));
        for (prefix, h) in [("read", self.read_hist()), ("write", self.write_hist())] {
            let (p50, p99) = match h {
                Some(h) if !h.is_empty() => (h.value_at_quantile(0.5), h.value_at_quantile(0.99)),
                _ => (0, 0),
            };
            m.insert(format!("{prefix}_latency_p50_ticks"), json!(p50));
            m.insert(format!("{prefix}_latency_p99_ticks"), json!(p99));
        }
        let errors: Map<String, Value> = IoType::ALL
            .iter()
            .filter(|t| self.get(**t).errors > 0)
            .map(|t| (t.name().to_string(), json!(self.get(*t).errors)))
            .collect();
        m.insert("io_error".into(), Value::Object(errors));
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_merge_and_percentiles() {
        let mut a = IoStats::new();
        for i in 1..=100u64 {
            a.record(IoType::Read, 4096, i * 1000);
        }
        let mut b = IoStats::new();
        b.record(IoType::Read, 4096, 500);
        b.record(IoType::Write, 8192, 7000);
        b.record_error(IoType::Write);
        a.merge(&b);
        let j = a.to_json("m0");
        assert_eq!(j["num_read_ops"], 101);
        assert_eq!(j["bytes_read"], 101 * 4096);
        assert_eq!(j["min_read_latency_ticks"], 500);
        assert_eq!(j["max_read_latency_ticks"], 100_000);
        assert_eq!(j["num_write_ops"], 1);
        assert_eq!(j["io_error"]["write"], 1);
        let p50 = j["read_latency_p50_ticks"].as_u64().unwrap();
        assert!((49_000..=51_000).contains(&p50), "{p50}");
        let p99 = j["read_latency_p99_ticks"].as_u64().unwrap();
        assert!((98_000..=100_500).contains(&p99), "{p99}");
    }
}
