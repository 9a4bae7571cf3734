//! The suite run against each data-storing module, and the error, split and delay modules'
//! own behaviour.

use super::*;

#[test]
fn malloc_suite() {
    let t = TestApp::start();
    malloc(&t, "m0");
    module_suite(&t, "m0");
    delete_in_flight(&t, "m0", "bdev_malloc_delete");
    t.stop();
}

/// Copies a zero-copy read's range out (in a test, where nothing writes concurrently).
fn shared_bytes(r: &crate::bdev::SharedRange) -> Vec<u8> {
    assert!(r.off + r.len <= r.mem.len());
    let mut out = vec![0u8; r.len];
    // SAFETY: the range is within the shared memory (checked above), which the Arc keeps
    // alive, and no I/O writes it during this test.
    unsafe { std::ptr::copy_nonoverlapping(r.mem.as_ptr().add(r.off), out.as_mut_ptr(), r.len) };
    out
}

#[test]
fn malloc_zero_copy_reads_share_the_region() {
    let t = TestApp::start();
    malloc(&t, "mz");
    let bs = 512;
    let w = t.io(t.main, "mz", write_io(10, 4, bs, 42));
    assert_eq!(w.status(), IoStatus::Success);
    let mut io = BdevIo::new(IoType::Read, 10, 4).with_bufs(vec![IoBuf::zeroed(4 * bs)]);
    io.accept_shared = true;
    let r = t.io(t.main, "mz", io);
    assert_eq!(r.status(), IoStatus::Success);
    let shared = r.shared.as_ref().expect("a shared range");
    assert_eq!((shared.off, shared.len), (10 * bs, 4 * bs));
    assert_eq!(shared_bytes(shared), pattern(42, 4 * bs).to_vec());
    assert!(
        flat(&r).iter().all(|&b| b == 0),
        "the buffer was not copied into"
    );
    // Out of range: refused like a copying read.
    let mut io = read_io(1023, 2, bs);
    io.accept_shared = true;
    let r = t.io(t.main, "mz", io);
    assert_eq!(r.status(), IoStatus::InvalidLbaRange);
    assert!(r.shared.is_none());
    // Without accept_shared the read copies as before.
    let r = t.io(t.main, "mz", read_io(10, 4, bs));
    assert!(r.shared.is_none());
    assert_eq!(flat(&r), pattern(42, 4 * bs).to_vec());
    t.stop();
}

#[test]
fn uring_suite() {
    let t = TestApp::start();
    let f = TempFile::new("uring", 4 << 20);
    let r = t.rpc(
        "bdev_uring_create",
        json!({"name": "u0", "filename": f.path()}),
    );
    match r {
        Ok(v) => assert_eq!(v, json!("u0")),
        Err(e) if e.message.contains("io_uring is not available") => {
            // Loud (straight to stderr, past the harness's capture), like tests/common's skip.
            assert!(
                std::env::var_os("POLLUX_NO_SKIP").is_none(),
                "uring bdev unavailable: {e}"
            );
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED: uring bdev suite: io_uring is not available here: {e}\n")
                    .as_bytes(),
            );
            return t.stop();
        }
        Err(e) => panic!("{e}"),
    }
    assert_eq!(t.bdev_info("u0")["block_size"], 4096);
    module_suite(&t, "u0");
    delete_in_flight(&t, "u0", "bdev_uring_delete");
    t.stop();
}

#[test]
fn aio_suite() {
    let t = TestApp::start();
    let f = TempFile::new("aio", 4 << 20);
    let r = t.rpc(
        "bdev_aio_create",
        json!({"name": "a0", "filename": f.path(), "block_size": 512}),
    );
    assert_eq!(r.unwrap(), json!("a0"));
    module_suite(&t, "a0");
    delete_in_flight(&t, "a0", "bdev_aio_delete");
    t.stop();
}

#[test]
fn passthru_suite() {
    let t = TestApp::start();
    malloc(&t, "m1");
    let r = t.rpc(
        "bdev_passthru_create",
        json!({"name": "pt0", "base_bdev_name": "m1"}),
    );
    assert_eq!(r.unwrap(), json!("pt0"));
    assert_eq!(t.bdev_info("m1")["claimed"], true);
    module_suite(&t, "pt0");
    delete_in_flight(&t, "pt0", "bdev_passthru_delete");
    assert_eq!(
        t.bdev_info("m1")["claimed"],
        false,
        "the claim goes with the passthru"
    );
    t.stop();
}

#[test]
fn split_suite_offsets_config_and_errors() {
    let t = TestApp::start();
    let r = t.rpc(
        "bdev_malloc_create",
        json!({"name": "sb", "num_blocks": 8192, "block_size": 512}),
    );
    assert_eq!(r.unwrap(), json!("sb"));
    let names = t
        .rpc(
            "bdev_split_create",
            json!({"base_bdev": "sb", "split_count": 4}),
        )
        .unwrap();
    assert_eq!(names, json!(["sbp0", "sbp1", "sbp2", "sbp3"]));
    assert_eq!(t.bdev_info("sb")["claimed"], true);
    let p1 = t.bdev_info("sbp1");
    assert_eq!(p1["num_blocks"], 2048);
    assert_eq!(p1["product_name"], "Split Disk");
    assert_eq!(p1["driver_specific"]["split"]["offset_blocks"], 2048);
    assert_ne!(p1["uuid"], t.bdev_info("sbp2")["uuid"]);
    module_suite(&t, "sbp1");
    // A part's block 5 is the base's block 2048 + 5; the last part ends at the base's end.
    let w = t.io(t.main, "sbp1", write_io(5, 1, 512, 77));
    assert_eq!(w.status(), IoStatus::Success);
    assert_eq!(
        w.offset_blocks, 5,
        "the I/O comes back at the part's offsets"
    );
    let r = t.io(t.other, "sb", read_io(2048 + 5, 1, 512));
    assert_eq!(flat(&r), &pattern(77, 512)[..]);
    let past = t.io(t.main, "sbp3", read_io(2048, 1, 512));
    assert_ne!(past.status(), IoStatus::Success, "beyond the part");
    // One config entry per base recreates every part.
    let cfg = t.config();
    let splits: Vec<&Value> = cfg
        .iter()
        .filter(|e| e["method"] == "bdev_split_create")
        .collect();
    assert_eq!(
        splits,
        [&json!({"method": "bdev_split_create",
                 "params": {"base_bdev": "sb", "split_count": 4, "split_size_mb": 0}})]
    );
    // Errors name what is wrong.
    for (params, needle) in [
        (json!({"base_bdev": "sb", "split_count": 2}), "sb"),
        (json!({"base_bdev": "nope", "split_count": 2}), "nope"),
        (json!({"base_bdev": "sb", "split_count": 0}), "split_count"),
        (json!({"base_bdev": "sb"}), "split_count"),
    ] {
        let e = t.rpc("bdev_split_create", params.clone()).unwrap_err();
        assert!(e.message.contains(needle), "{params}: {}", e.message);
    }
    // Delete: every part goes, the base is free again.
    assert_eq!(
        t.rpc("bdev_split_delete", json!({"base_bdev": "sb"}))
            .unwrap(),
        json!(true)
    );
    assert!(t.rpc("bdev_get_bdevs", json!({"name": "sbp0"})).is_err());
    assert_eq!(t.bdev_info("sb")["claimed"], false);
    let e = t
        .rpc("bdev_split_delete", json!({"base_bdev": "sb"}))
        .unwrap_err();
    assert_eq!(e.code, -libc::ENODEV);
    // split_size_mb: two 1 MiB parts of a 4 MiB base; too big is refused.
    let e = t
        .rpc(
            "bdev_split_create",
            json!({"base_bdev": "sb", "split_count": 3, "split_size_mb": 2}),
        )
        .unwrap_err();
    assert!(e.message.contains("split_size_mb"), "{}", e.message);
    assert_eq!(
        t.bdev_info("sb")["claimed"],
        false,
        "nothing left half-made"
    );
    let names = t
        .rpc(
            "bdev_split_create",
            json!({"base_bdev": "sb", "split_count": 2, "split_size_mb": 1}),
        )
        .unwrap();
    assert_eq!(names, json!(["sbp0", "sbp1"]));
    assert_eq!(t.bdev_info("sbp1")["num_blocks"], 2048);
    // Deleting the base deletes the parts.
    assert_eq!(
        t.rpc("bdev_malloc_delete", json!({"name": "sb"})).unwrap(),
        json!(true)
    );
    let deadline = std::time::Instant::now() + WAIT;
    while t.rpc("bdev_get_bdevs", json!({"name": "sbp1"})).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "parts outlived the base"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t.stop();
}

#[test]
fn delay_suite_and_hot_remove_of_base() {
    let t = TestApp::start();
    malloc(&t, "m2");
    let r = t.rpc(
        "bdev_delay_create",
        json!({"name": "d0", "base_bdev_name": "m2", "avg_read_latency": 100,
               "p99_read_latency": 200, "avg_write_latency": 100, "p99_write_latency": 300}),
    );
    assert_eq!(r.unwrap(), json!("d0"));
    module_suite(&t, "d0");
    let stats = t.rpc("bdev_get_iostat", json!({"name": "d0"})).unwrap();
    let min_read = stats["bdevs"][0]["min_read_latency_ticks"]
        .as_u64()
        .unwrap();
    assert!(
        min_read >= 100_000,
        "reads were delayed at least 100us: {min_read}"
    );
    assert_eq!(
        t.rpc(
            "bdev_delay_update_latency",
            json!({"delay_bdev_name": "d0", "latency_type": "avg_read", "latency_us": 5})
        )
        .unwrap(),
        json!(true)
    );
    assert_eq!(
        t.bdev_info("d0")["driver_specific"]["delay"]["avg_read_latency"],
        5
    );
    assert!(t
        .rpc(
            "bdev_delay_update_latency",
            json!({"delay_bdev_name": "d0", "latency_type": "bogus", "latency_us": 5})
        )
        .is_err());
    // Deleting the base while a user has the delay bdev open removes both.
    assert_eq!(
        t.rpc("bdev_malloc_delete", json!({"name": "m2"})).unwrap(),
        json!(true)
    );
    assert!(
        t.rpc("bdev_get_bdevs", json!({"name": "d0"})).is_err(),
        "delay bdev went with its base"
    );
    let removed = t.on(t.main, |tx| {
        let _ = tx.send(REMOVED.with(|r| r.borrow().clone()));
    });
    assert!(removed.contains(&"d0".to_string()));
    // And the delete-in-flight check on a fresh delay bdev.
    malloc(&t, "m3");
    t.rpc(
        "bdev_delay_create",
        json!({"name": "d1", "base_bdev_name": "m3", "avg_read_latency": 50,
               "p99_read_latency": 50, "avg_write_latency": 50, "p99_write_latency": 50}),
    )
    .unwrap();
    delete_in_flight(&t, "d1", "bdev_delay_delete");
    t.stop();
}

#[test]
fn error_bdev_failure_and_nomem() {
    let t = TestApp::start();
    malloc(&t, "m4");
    assert_eq!(
        t.rpc("bdev_error_create", json!({"base_name": "m4"}))
            .unwrap(),
        json!(true)
    );
    let bs = 512;
    let inject = |io_type: &str, error_type: &str, num: u64| {
        t.rpc(
            "bdev_error_inject_error",
            json!({"name": "EE_m4", "io_type": io_type, "error_type": error_type, "num": num}),
        )
        .unwrap()
    };
    inject("write", "failure", 2);
    for _ in 0..2 {
        let w = t.io(t.main, "EE_m4", write_io(0, 1, bs, 3));
        assert_eq!(w.status(), IoStatus::Failed);
        assert_eq!(
            w.status().nvme(),
            NvmeStatus {
                sct: 0,
                sc: 6,
                dnr: false
            }
        );
    }
    assert_eq!(
        t.io(t.main, "EE_m4", write_io(0, 1, bs, 3)).status(),
        IoStatus::Success
    );
    // nomem is retried by the channel until the injections are spent: the user sees success.
    inject("read", "nomem", 5);
    let r = t.io(t.main, "EE_m4", read_io(0, 1, bs));
    assert_eq!(r.status(), IoStatus::Success);
    assert_eq!(flat(&r), &pattern(3, bs)[..]);
    let e = t.on(t.main, |tx| {
        let h = lookup("EE_m4").unwrap();
        let _ = tx.send(
            h.module_as::<error::ErrorBdev>()
                .unwrap()
                .injections()
                .remaining(IoType::Read),
        );
    });
    assert_eq!(e, 0, "all nomem injections were consumed by retries");
    // corrupt_data on reads flips a byte of the returned data
    t.rpc(
        "bdev_error_inject_error",
        json!({"name": "EE_m4", "io_type": "read", "error_type": "corrupt_data", "num": 1,
               "corrupt_offset": 5, "corrupt_value": 1}),
    )
    .unwrap();
    // (a zero-copy read is turned into a copying one, so the corruption shows)
    let mut zread = read_io(0, 1, bs);
    zread.accept_shared = true;
    let r = t.io(t.main, "EE_m4", zread);
    assert!(r.shared.is_none());
    let mut want = pattern(3, bs).to_vec();
    want[5] ^= 1;
    assert_eq!(flat(&r), want);
    let bad = t.rpc(
        "bdev_error_inject_error",
        json!({"name": "EE_m4", "io_type": "read", "error_type": "explode"}),
    );
    assert!(bad.unwrap_err().message.contains("error_type"));
    // the error bdev holds the claim: a second stacked bdev is refused
    let second = t.rpc(
        "bdev_passthru_create",
        json!({"name": "p9", "base_bdev_name": "m4"}),
    );
    let err = second.unwrap_err();
    assert!(err.message.contains("already claimed"), "{}", err.message);
    assert_eq!(
        t.rpc("bdev_error_delete", json!({"name": "EE_m4"}))
            .unwrap(),
        json!(true)
    );
    t.stop();
}
