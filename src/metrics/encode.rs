//! A snapshot written in Prometheus's text exposition format (version 0.0.4), with the
//! `prometheus-client` crate's encoder.
//!
//! Names follow Prometheus's conventions: a `pollux_` prefix, base units (seconds, bytes),
//! counters ending in `_total`, and the standard `process_*` names for the process. Times
//! the reactors count in nanoseconds are reported in seconds. Bdev latency histograms are
//! cut from the always-on read and write latency histograms of the bdev's iostat at fixed
//! bucket bounds (to their 1 % precision).

use super::gather::Snapshot;
use crate::bdev::IoType;
use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt;
use std::sync::Arc;

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the bdev latency histogram buckets; `+Inf` follows.
pub const LATENCY_BUCKETS: [f64; 20] = [
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const NS: f64 = 1e9;

/// The text exposition of `snap`.
pub fn encode(snap: Arc<Snapshot>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snap)));
    let mut out = String::new();
    // Writing into a String cannot fail, and the collector's own writes only fail with it.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct SnapshotCollector(Arc<Snapshot>);

type Labels = Vec<(&'static str, String)>;
/// A metric read from one record: name, help, and the accessor.
type Field<T> = (&'static str, &'static str, fn(&T) -> u64);

/// Writes one metric family: its descriptor, then one sample per label set.
fn family<T>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels, T)>,
    mut write: impl FnMut(&mut MetricEncoder, T) -> fmt::Result,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in samples {
        let mut f = m.encode_family(&labels)?;
        write(&mut f, v)?;
    }
    Ok(())
}

fn counters<V: prometheus_client::encoding::EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, V)>,
) -> fmt::Result {
    family(enc, name, help, MetricType::Counter, samples, |f, v| {
        f.encode_counter::<NoLabelSet, V, f64>(&v, None)
    })
}

fn gauges<V: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, V)>,
) -> fmt::Result {
    family(enc, name, help, MetricType::Gauge, samples, |f, v| {
        f.encode_gauge(&v)
    })
}

/// Per-bucket (not cumulative) counts of `h` at `LATENCY_BUCKETS` (values in ns), the last
/// entry being everything above the highest bound.
/// A bdev with no read or write yet has no histogram (`None`): every bucket is 0.
pub fn bucket_counts(h: Option<&Histogram<u64>>) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
    let mut below = 0u64;
    let h = h.filter(|h| !h.is_empty());
    for le in LATENCY_BUCKETS {
        let upto = (le * NS) as u64;
        let cumulative = h.map_or(0, |h| h.count_between(0, upto));
        out.push((le, cumulative.saturating_sub(below)));
        below = below.max(cumulative);
    }
    out.push((
        f64::INFINITY,
        h.map_or(0, |h| h.len()).saturating_sub(below),
    ));
    out
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &*self.0;
        let e = &mut enc;
        gauges(
            e,
            "pollux_build_info",
            "pollux's version (always 1)",
            [(
                vec![("version", env!("CARGO_PKG_VERSION").to_string())],
                1u64,
            )],
        )?;

        // ---- reactors and pollers ----
        let core = |c: u32| -> Labels { vec![("core", c.to_string())] };
        let per_reactor = |f: &dyn Fn(&crate::reactor::ReactorStats) -> f64| {
            s.reactors
                .iter()
                .map(|r| (core(r.core), f(r)))
                .collect::<Vec<_>>()
        };
        let per_reactor_n = |f: &dyn Fn(&crate::reactor::ReactorStats) -> u64| {
            s.reactors
                .iter()
                .map(|r| (core(r.core), f(r)))
                .collect::<Vec<_>>()
        };
        counters(
            e,
            "pollux_reactor_busy_seconds",
            "Time a reactor spent in loops where a poller or message did work",
            per_reactor(&|r| r.busy_ns as f64 / NS),
        )?;
        counters(
            e,
            "pollux_reactor_idle_seconds",
            "Time a reactor spent polling with nothing to do or asleep",
            per_reactor(&|r| r.idle_ns as f64 / NS),
        )?;
        counters(
            e,
            "pollux_reactor_sleep_seconds",
            "Time a reactor spent asleep in its idle strategy (part of the idle time)",
            per_reactor(&|r| r.sleep_ns as f64 / NS),
        )?;
        counters(
            e,
            "pollux_reactor_sleeps",
            "Times a reactor went to sleep",
            per_reactor_n(&|r| r.sleeps),
        )?;
        counters(
            e,
            "pollux_reactor_wakeups",
            "Times a sleeping reactor was woken",
            per_reactor_n(&|r| r.wakeups),
        )?;
        counters(
            e,
            "pollux_reactor_messages",
            "Messages a reactor ran",
            per_reactor_n(&|r| r.messages),
        )?;
        gauges(
            e,
            "pollux_reactor_main",
            "1 for the main reactor (RPC, control), 0 for the others",
            s.reactors
                .iter()
                .map(|r| (core(r.core), u64::from(r.is_main))),
        )?;
        let pollers = || {
            s.reactors.iter().flat_map(|r| {
                r.pollers.iter().map(move |p| {
                    let labels: Labels = vec![
                        ("core", r.core.to_string()),
                        ("poller", p.name.clone()),
                        ("id", p.id.to_string()),
                    ];
                    (labels, p)
                })
            })
        };
        counters(
            e,
            "pollux_poller_runs",
            "Times a poller ran",
            pollers().map(|(l, p)| (l, p.run_count)),
        )?;
        counters(
            e,
            "pollux_poller_busy",
            "Times a poller ran and found work",
            pollers().map(|(l, p)| (l, p.busy_count)),
        )?;

        // ---- NVMe-oF/TCP poll groups ----
        let group = |name: &str| -> Labels { vec![("poll_group", name.to_string())] };
        type G = crate::metrics::gather::PollGroupStats;
        let per_group = |f: fn(&G) -> u64| {
            s.poll_groups
                .iter()
                .map(|g| (group(&g.name), f(g)))
                .collect::<Vec<_>>()
        };
        let group_counters: [Field<G>; 7] = [
            (
                "pollux_nvmf_admin_qpairs",
                "Admin queue pairs a poll group accepted",
                |g| g.admin_qpairs,
            ),
            (
                "pollux_nvmf_io_qpairs",
                "I/O queue pairs a poll group accepted",
                |g| g.io_qpairs,
            ),
            (
                "pollux_nvmf_completed_nvme_io",
                "NVMe I/O commands a poll group completed",
                |g| g.completed_nvme_io,
            ),
            (
                "pollux_nvmf_tcp_connections",
                "NVMe/TCP connections a poll group took",
                |g| g.connections,
            ),
            (
                "pollux_nvmf_tcp_term_reqs_sent",
                "C2HTermReq PDUs sent (protocol errors of the host)",
                |g| g.term_reqs_sent,
            ),
            (
                "pollux_nvmf_tcp_hdr_digest_errors",
                "PDUs received with a wrong header digest",
                |g| g.hdr_digest_errors,
            ),
            (
                "pollux_nvmf_tcp_data_digest_errors",
                "PDUs received with a wrong data digest",
                |g| g.data_digest_errors,
            ),
        ];
        for (name, help, f) in group_counters {
            counters(e, name, help, per_group(f))?;
        }
        let group_gauges: [Field<G>; 4] = [
            (
                "pollux_nvmf_current_admin_qpairs",
                "Admin queue pairs open on a poll group",
                |g| g.current_admin_qpairs,
            ),
            (
                "pollux_nvmf_current_io_qpairs",
                "I/O queue pairs open on a poll group",
                |g| g.current_io_qpairs,
            ),
            (
                "pollux_nvmf_tcp_open_connections",
                "NVMe/TCP connections open on a poll group",
                |g| g.open_connections,
            ),
            (
                "pollux_nvmf_pending_bdev_io",
                "Bdev I/O a poll group has in flight",
                |g| g.pending_bdev_io,
            ),
        ];
        for (name, help, f) in group_gauges {
            gauges(e, name, help, per_group(f))?;
        }

        // ---- NVMe-oF subsystems ----
        type S = crate::metrics::gather::SubsystemStats;
        let per_subsystem = |f: fn(&S) -> u64| {
            s.subsystems
                .iter()
                .map(|x| {
                    let l: Labels = vec![("nqn", x.nqn.clone()), ("subtype", x.subtype.clone())];
                    (l, f(x))
                })
                .collect::<Vec<_>>()
        };
        let subsystem_gauges: [Field<S>; 4] = [
            (
                "pollux_nvmf_subsystem_namespaces",
                "Namespaces of a subsystem",
                |x| x.namespaces,
            ),
            (
                "pollux_nvmf_subsystem_listeners",
                "Listeners of a subsystem",
                |x| x.listeners,
            ),
            (
                "pollux_nvmf_subsystem_controllers",
                "Controllers connected to a subsystem",
                |x| x.controllers,
            ),
            (
                "pollux_nvmf_subsystem_qpairs",
                "Queue pairs (connections) of a subsystem's controllers",
                |x| x.qpairs,
            ),
        ];
        for (name, help, f) in subsystem_gauges {
            gauges(e, name, help, per_subsystem(f))?;
        }

        // ---- bdevs ----
        let per_type = |f: fn(&crate::bdev::iostat::TypeStats) -> u64| {
            s.bdevs
                .iter()
                .flat_map(move |b| {
                    IoType::ALL.iter().map(move |t| {
                        let l: Labels =
                            vec![("bdev", b.name.clone()), ("type", t.name().to_string())];
                        (l, f(&b.stats.per_type[t.index()]))
                    })
                })
                .collect::<Vec<_>>()
        };
        counters(
            e,
            "pollux_bdev_ops",
            "Bdev operations completed successfully",
            per_type(|t| t.ops),
        )?;
        counters(
            e,
            "pollux_bdev_bytes",
            "Bytes of successful bdev operations",
            per_type(|t| t.bytes),
        )?;
        counters(
            e,
            "pollux_bdev_errors",
            "Bdev operations that failed",
            per_type(|t| t.errors),
        )?;
        let hists = s.bdevs.iter().flat_map(|b| {
            [
                (IoType::Read, b.stats.read_hist()),
                (IoType::Write, b.stats.write_hist()),
            ]
            .into_iter()
            .map(move |(t, h)| {
                let l: Labels = vec![("bdev", b.name.clone()), ("type", t.name().to_string())];
                let sum = b.stats.per_type[t.index()].latency_total as f64 / NS;
                (l, (sum, h))
            })
        });
        family(
            e,
            "pollux_bdev_latency_seconds",
            "Latency of successful bdev reads and writes",
            MetricType::Histogram,
            hists,
            |f, (sum, h)| {
                let buckets = bucket_counts(h);
                let count = h.map_or(0, |h| h.len());
                f.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
            },
        )?;

        // ---- the process ----
        let p = &s.process;
        let one = |v: Option<u64>| v.map(|v| (Labels::new(), v));
        gauges(
            e,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            one(p.resident_bytes),
        )?;
        gauges(
            e,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            one(p.virtual_bytes),
        )?;
        gauges(
            e,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            p.start_time_seconds.map(|v| (Labels::new(), v)),
        )?;
        counters(
            e,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            [(Labels::new(), p.cpu_seconds)],
        )?;
        gauges(
            e,
            "process_open_fds",
            "Number of open file descriptors",
            one(p.open_fds),
        )?;
        gauges(
            e,
            "process_max_fds",
            "Maximum number of open file descriptors",
            one(p.max_fds),
        )?;
        gauges(e, "process_threads", "Number of OS threads", one(p.threads))?;
        gauges(
            e,
            "pollux_metrics_failed_parts",
            "Parts of the statistics this scrape could not read (see the log)",
            [(Labels::new(), s.failed.len() as u64)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_each_value_once() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 2).unwrap();
        h.record(3_000).unwrap(); // 3 µs: first bucket (5 µs)
        h.record(20_000).unwrap(); // 20 µs: 25 µs bucket
        h.record(20_000_000_000).unwrap(); // 20 s: +Inf
        let b = bucket_counts(Some(&h));
        assert_eq!(b.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(b[0], (5e-6, 1));
        assert_eq!(b[2], (2.5e-5, 1));
        assert_eq!(b.last().unwrap().1, 1);
        assert_eq!(b.iter().map(|(_, n)| n).sum::<u64>(), 3);
        let empty = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 2).unwrap();
        assert!(bucket_counts(Some(&empty)).iter().all(|(_, n)| *n == 0));
        assert!(bucket_counts(None).iter().all(|(_, n)| *n == 0));
    }

    #[test]
    fn text_has_types_and_units() {
        let mut snap = Snapshot::default();
        snap.process.resident_bytes = Some(4096);
        snap.subsystems
            .push(crate::metrics::gather::SubsystemStats {
                nqn: "nqn.x:\"quoted\"".into(),
                subtype: "NVMe".into(),
                controllers: 2,
                ..Default::default()
            });
        let text = encode(Arc::new(snap));
        assert!(
            text.contains("# TYPE process_resident_memory_bytes gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("process_resident_memory_bytes 4096\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "pollux_nvmf_subsystem_controllers{nqn=\"nqn.x:\\\"quoted\\\"\",subtype=\"NVMe\"} 2\n"
            ),
            "{text}"
        );
    }
}
