//! I/O statistics, QoS limits and latency histograms, checked across reactors.

use super::*;

#[test]
fn iostat_per_channel_and_resets() {
    let t = TestApp::start();
    malloc(&t, "st_base");
    // A delay bdev, so every latency is measurably above zero.
    delay_over(&t, "st0", "st_base", 50);
    t.io(t.main, "st0", write_io(0, 2, 512, 1));
    t.io(t.other, "st0", read_io(0, 2, 512));
    t.io(t.other, "st0", read_io(2, 1, 512));
    let reads = |s: &Value| s["bdevs"][0]["num_read_ops"].as_u64().unwrap();
    // Per channel: one entry per reactor that has a channel, by SPDK thread id.
    let pc = t
        .rpc(
            "bdev_get_iostat",
            json!({"name": "st0", "per_channel": true}),
        )
        .unwrap();
    assert_eq!(pc["name"], "st0");
    let channels = pc["channels"].as_array().unwrap();
    let total: u64 = channels
        .iter()
        .map(|c| c["num_read_ops"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 2);
    assert!(channels
        .iter()
        .all(|c| c["thread_id"].as_u64().unwrap() >= 1));
    assert_eq!(channels.len(), if t.main == t.other { 1 } else { 2 });
    let e = t
        .rpc("bdev_get_iostat", json!({"per_channel": true}))
        .unwrap_err();
    assert!(e.message.contains("per_channel"), "{}", e.message);
    // reset_mode maxmin keeps the counts, clears the extremes.
    let s = t
        .rpc(
            "bdev_get_iostat",
            json!({"name": "st0", "reset_mode": "maxmin"}),
        )
        .unwrap();
    assert_eq!(reads(&s), 2);
    assert!(s["bdevs"][0]["max_read_latency_ticks"].as_u64().unwrap() > 0);
    let s = t.rpc("bdev_get_iostat", json!({"name": "st0"})).unwrap();
    assert_eq!(reads(&s), 2);
    assert_eq!(s["bdevs"][0]["max_read_latency_ticks"], 0);
    // reset_mode all: this answer has the counts, the next one starts over.
    let s = t
        .rpc(
            "bdev_get_iostat",
            json!({"name": "st0", "reset_mode": "all"}),
        )
        .unwrap();
    assert_eq!(reads(&s), 2);
    assert_eq!(
        reads(&t.rpc("bdev_get_iostat", json!({"name": "st0"})).unwrap()),
        0
    );
    // bdev_reset_iostat, by name or for all.
    t.io(t.other, "st0", read_io(0, 1, 512));
    assert_eq!(
        reads(&t.rpc("bdev_get_iostat", json!({"name": "st0"})).unwrap()),
        1
    );
    assert_eq!(
        t.rpc("bdev_reset_iostat", json!({"name": "st0"})).unwrap(),
        json!(true)
    );
    assert_eq!(
        reads(&t.rpc("bdev_get_iostat", json!({"name": "st0"})).unwrap()),
        0
    );
    t.io(t.main, "st0", read_io(0, 1, 512));
    assert_eq!(t.rpc("bdev_reset_iostat", json!({})).unwrap(), json!(true));
    assert_eq!(
        reads(&t.rpc("bdev_get_iostat", json!({"name": "st0"})).unwrap()),
        0
    );
    let e = t
        .rpc("bdev_reset_iostat", json!({"mode": "some"}))
        .unwrap_err();
    assert!(e.message.contains("mode"), "{}", e.message);
    let e = t
        .rpc("bdev_reset_iostat", json!({"name": "nope"}))
        .unwrap_err();
    assert_eq!(e.code, -libc::ENODEV);
    let e = t
        .rpc("bdev_get_iostat", json!({"reset_mode": "sometimes"}))
        .unwrap_err();
    assert!(e.message.contains("reset_mode"), "{}", e.message);
    t.stop();
}

/// Completed I/O per second of `make` batches of 16 kept going on both reactors for `secs`.
fn rate_on_both_reactors(t: &TestApp, bdev: &str, secs: f64, make: fn() -> BdevIo) -> f64 {
    let start = std::time::Instant::now();
    let done = std::thread::scope(|scope| {
        let runs: Vec<_> = [t.main, t.other]
            .into_iter()
            .map(|core| {
                scope.spawn(move || {
                    let mut n = 0u64;
                    while start.elapsed().as_secs_f64() < secs {
                        let ios = t.io_batch(core, bdev, (0..16).map(|_| make()).collect());
                        assert!(ios.iter().all(|io| io.status() == IoStatus::Success));
                        n += ios.len() as u64;
                    }
                    n
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).sum::<u64>()
    });
    done as f64 / start.elapsed().as_secs_f64()
}

#[test]
fn qos_limits_hold_across_reactors() {
    let t = TestApp::start();
    let r = t.rpc(
        "bdev_null_create",
        json!({"name": "q0", "num_blocks": 1 << 20, "block_size": 512}),
    );
    assert_eq!(r.unwrap(), json!("q0"));
    assert_eq!(
        t.rpc(
            "bdev_set_qos_limit",
            json!({"name": "q0", "rw_ios_per_sec": 2000})
        )
        .unwrap(),
        json!(true)
    );
    assert_eq!(
        t.bdev_info("q0")["assigned_rate_limits"]["rw_ios_per_sec"],
        2000
    );
    let iops = rate_on_both_reactors(&t, "q0", 1.5, || read_io(0, 8, 512));
    eprintln!("rw_ios_per_sec 2000: measured {iops:.0} I/O per second");
    assert!((1800.0..=2200.0).contains(&iops), "{iops}");
    // Bytes: 8 MiB/s of 16 KiB reads is 512 per second; the IOPS limit goes (0 = none).
    t.rpc(
        "bdev_set_qos_limit",
        json!({"name": "q0", "rw_ios_per_sec": 0, "r_mbytes_per_sec": 8}),
    )
    .unwrap();
    let limits = &t.bdev_info("q0")["assigned_rate_limits"];
    assert_eq!(limits["rw_ios_per_sec"], 0);
    assert_eq!(limits["r_mbytes_per_sec"], 8);
    let rate = rate_on_both_reactors(&t, "q0", 1.5, || read_io(0, 32, 512));
    let mbps = rate * 16.0 / 1024.0;
    eprintln!("r_mbytes_per_sec 8: measured {mbps:.2} MiB/s");
    assert!((7.2..=8.8).contains(&mbps), "{mbps}");
    // Writes do not draw from the read limit.
    let writes = rate_on_both_reactors(&t, "q0", 0.3, || write_io(0, 32, 512, 3));
    assert!(
        writes * 16.0 / 1024.0 > 16.0,
        "writes unlimited: {writes}/s"
    );
    // The config carries the limits; removing them all frees the bdev.
    let cfg = t.config();
    let q = cfg
        .iter()
        .find(|e| e["method"] == "bdev_set_qos_limit")
        .expect("limits saved");
    assert_eq!(q["params"]["name"], "q0");
    assert_eq!(q["params"]["r_mbytes_per_sec"], 8);
    t.rpc(
        "bdev_set_qos_limit",
        json!({"name": "q0", "r_mbytes_per_sec": 0}),
    )
    .unwrap();
    assert!(t.bdev_info("q0")["assigned_rate_limits"]
        .as_object()
        .unwrap()
        .values()
        .all(|v| v == 0));
    let free = rate_on_both_reactors(&t, "q0", 0.3, || read_io(0, 32, 512));
    assert!(free > 2000.0, "no limit any more: {free}/s");
    // Errors name what is wrong.
    let e = t
        .rpc("bdev_set_qos_limit", json!({"name": "q0"}))
        .unwrap_err();
    assert!(e.message.contains("rw_ios_per_sec"), "{}", e.message);
    let e = t
        .rpc(
            "bdev_set_qos_limit",
            json!({"name": "nope", "rw_ios_per_sec": 1000}),
        )
        .unwrap_err();
    assert_eq!(e.code, -libc::ENODEV);
    t.stop();
}

#[test]
fn histogram_counts_latencies_on_every_reactor() {
    use base64::Engine;
    let t = TestApp::start();
    malloc(&t, "hb");
    delay_over(&t, "h0", "hb", 200);
    let e = t
        .rpc("bdev_get_histogram", json!({"name": "h0"}))
        .unwrap_err();
    assert!(e.message.contains("not enabled"), "{}", e.message);
    t.io(t.main, "h0", read_io(0, 1, 512));
    assert_eq!(
        t.rpc(
            "bdev_enable_histogram",
            json!({"name": "h0", "enable": true, "opc": "read"})
        )
        .unwrap(),
        json!(true)
    );
    t.io(t.main, "h0", read_io(0, 1, 512));
    t.io(t.other, "h0", read_io(1, 1, 512));
    t.io(t.other, "h0", write_io(1, 1, 512, 5));
    let h = t.rpc("bdev_get_histogram", json!({"name": "h0"})).unwrap();
    assert_eq!(h["bucket_shift"], 7);
    assert_eq!(h["tsc_rate"], 1_000_000_000u64);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(h["histogram"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes.len(), 58 * 128 * 8);
    let counts: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        counts.iter().sum::<u64>(),
        2,
        "two reads since enabled, writes filtered"
    );
    // Both took at least the 200 us delay: nothing counted below range 11 (2^17 ns).
    assert!(counts[..11 * 128].iter().all(|c| *c == 0));
    let cfg = t.config();
    let saved = cfg
        .iter()
        .find(|e| e["method"] == "bdev_enable_histogram")
        .expect("saved");
    assert_eq!(saved["params"]["opc"], "read");
    for (params, field) in [
        (
            json!({"name": "h0", "enable": true, "granularity": 40}),
            "granularity",
        ),
        (json!({"name": "h0", "enable": true, "opc": "readz"}), "opc"),
        (
            json!({"name": "h0", "enable": true, "min_nsec": 9, "max_nsec": 1}),
            "min_nsec",
        ),
    ] {
        let e = t.rpc("bdev_enable_histogram", params).unwrap_err();
        assert!(e.message.contains(field), "{}", e.message);
    }
    t.rpc(
        "bdev_enable_histogram",
        json!({"name": "h0", "enable": false}),
    )
    .unwrap();
    assert!(t.rpc("bdev_get_histogram", json!({"name": "h0"})).is_err());
    t.stop();
}
