//! The layer itself: claims and names, null resize, the config writer, hot removal,
//! channel close, status mapping and RPC errors.

use super::*;

#[test]
fn null_resize_claims_names_and_config() {
    let t = TestApp::start();
    let r = t.rpc(
        "bdev_null_create",
        json!({"name": "n0", "num_blocks": 256, "block_size": 4096}),
    );
    assert_eq!(r.unwrap(), json!("n0"));
    let dup = t.rpc(
        "bdev_null_create",
        json!({"name": "n0", "num_blocks": 1, "block_size": 512}),
    );
    assert_eq!(dup.unwrap_err().code, -libc::EEXIST);
    let unknown = t.rpc(
        "bdev_null_create",
        json!({"name": "n1", "num_blocks": 1, "block_size": 512, "x": 1}),
    );
    assert!(unknown.unwrap_err().message.contains("`x`"));
    let r = t.io(t.other, "n0", read_io(3, 2, 4096));
    assert_eq!(r.status(), IoStatus::Success);
    assert!(flat(&r).iter().all(|&b| b == 0));
    assert_eq!(
        t.rpc("bdev_null_resize", json!({"name": "n0", "new_size": 2}))
            .unwrap(),
        json!(true)
    );
    assert_eq!(t.bdev_info("n0")["num_blocks"], 512);
    assert_eq!(
        t.io(t.other, "n0", read_io(400, 1, 4096)).status(),
        IoStatus::Success
    );
    assert!(t
        .rpc("bdev_null_resize", json!({"name": "n0", "new_size": 1}))
        .is_err());
    // claims: first wins, second refused with a clear error
    let msgs = t.on(t.other, |tx| {
        let a = open("n0", |_| {}).unwrap();
        let b = open("n0", |_| {}).unwrap();
        a.claim("nvmf").unwrap();
        let e = b.claim("other").unwrap_err().to_string();
        drop(a);
        let after = b.claim("other").is_ok();
        let _ = tx.send((e, after));
    });
    assert_eq!(msgs.0, "bdev n0 already claimed by module nvmf");
    assert!(msgs.1, "the claim is released with its descriptor");
    malloc(&t, "m5");
    t.rpc(
        "bdev_passthru_create",
        json!({"name": "p5", "base_bdev_name": "m5"}),
    )
    .unwrap();
    let cfg = t.config();
    let methods: Vec<&str> = cfg.iter().map(|c| c["method"].as_str().unwrap()).collect();
    assert_eq!(
        methods,
        [
            "bdev_set_options",
            "bdev_null_create",
            "bdev_malloc_create",
            "bdev_passthru_create",
            "bdev_wait_for_examine"
        ]
    );
    assert_eq!(cfg[1]["params"]["num_blocks"], 512);
    assert_eq!(cfg[3]["params"]["base_bdev_name"], "m5");
    // iostat by name and names
    let s = t.rpc("bdev_get_iostat", json!({"names": ["n0"]})).unwrap();
    assert_eq!(s["bdevs"][0]["num_read_ops"], 2);
    assert_eq!(s["bdevs"][0]["bytes_read"], 3 * 4096);
    assert_eq!(s["tick_rate"], 1_000_000_000u64);
    assert!(t.rpc("bdev_get_iostat", json!({"name": "nope"})).is_err());
    assert_eq!(
        t.rpc("bdev_wait_for_examine", json!({})).unwrap(),
        json!(true)
    );
    assert_eq!(
        t.rpc("bdev_set_options", json!({"bdev_io_pool_size": 1024}))
            .unwrap(),
        json!(true)
    );
    let all = t.rpc("bdev_get_bdevs", json!({})).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3);
    assert_eq!(all[0]["supported_io_types"]["unmap"], true);
    assert_eq!(
        t.rpc("bdev_null_delete", json!({"name": "n0"})).unwrap(),
        json!(true)
    );
    assert!(
        t.rpc("bdev_malloc_delete", json!({"name": "p5"})).is_err(),
        "wrong module"
    );
    t.stop();
}

#[test]
fn status_maps_to_nvme() {
    assert_eq!(
        IoStatus::InvalidLbaRange.nvme(),
        NvmeStatus {
            sct: 0,
            sc: 0x80,
            dnr: true
        }
    );
    assert_eq!(IoStatus::MediaError.nvme().sct, 2);
    assert_eq!(IoStatus::Success.nvme().sc, 0);
    assert_eq!(IoStatus::Aborted.nvme().sc, 7);
}

/// A sink that forwards every completion to a channel (tests only).
struct SendSink(mpsc::Sender<BdevIo>);

impl IoSink for SendSink {
    fn io_done(&self, io: BdevIo) {
        let _ = self.0.send(io);
    }
}

thread_local! {
    static HELD: RefCell<Vec<Box<dyn std::any::Any>>> = RefCell::new(Vec::new());
}

#[test]
fn removal_aborts_new_io_and_waits_for_the_last_close() {
    let t = TestApp::start();
    malloc(&t, "m6");
    // A user that keeps its descriptor open after the remove event.
    let (events_tx, events_rx) = mpsc::channel();
    let (io_tx, io_rx) = mpsc::channel();
    t.on(t.other, move |tx: mpsc::Sender<()>| {
        let desc = open("m6", move |ev| {
            let _ = events_tx.send(ev);
        })
        .unwrap();
        let ch = desc.open_channel(Rc::new(SendSink(io_tx))).unwrap();
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            h.push(Box::new(ch));
            h.push(Box::new(desc));
        });
        tx.send(()).unwrap();
    });
    let (del_tx, del_rx) = mpsc::channel();
    t.app
        .send_to(t.main, move || {
            rpc::call("bdev_malloc_delete", json!({"name": "m6"}), move |r| {
                let _ = del_tx.send(r);
            })
        })
        .unwrap();
    assert_eq!(events_rx.recv_timeout(WAIT).unwrap(), BdevEvent::Remove);
    assert!(
        del_rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "the delete waits for the user to close"
    );
    // New I/O on the still-open channel fails cleanly.
    t.on(t.other, |tx: mpsc::Sender<()>| {
        HELD.with(|h| {
            let h = h.borrow();
            let ch = h[0].downcast_ref::<IoChannel>().unwrap();
            ch.submit(read_io(0, 1, 512));
        });
        tx.send(()).unwrap();
    });
    assert_eq!(
        io_rx.recv_timeout(WAIT).unwrap().status(),
        IoStatus::Aborted
    );
    t.on(t.other, |tx: mpsc::Sender<()>| {
        HELD.with(|h| h.borrow_mut().clear());
        tx.send(()).unwrap();
    });
    assert_eq!(del_rx.recv_timeout(WAIT).unwrap().unwrap(), json!(true));
    t.stop();
}

#[test]
fn closing_a_channel_still_delivers_in_flight_io() {
    let t = TestApp::start();
    malloc(&t, "m7");
    t.rpc(
        "bdev_delay_create",
        json!({"name": "d7", "base_bdev_name": "m7", "avg_read_latency": 2000,
               "p99_read_latency": 2000, "avg_write_latency": 2000, "p99_write_latency": 2000}),
    )
    .unwrap();
    let (io_tx, io_rx) = mpsc::channel();
    t.on(t.main, move |tx: mpsc::Sender<()>| {
        let desc = open("d7", |_| {}).unwrap();
        let ch = desc.open_channel(Rc::new(SendSink(io_tx))).unwrap();
        for i in 0..8 {
            ch.submit(write_io(i, 1, 512, i).with_token(i));
        }
        drop(ch);
        drop(desc);
        tx.send(()).unwrap();
    });
    let mut tokens: Vec<u64> = (0..8)
        .map(|_| {
            let io = io_rx.recv_timeout(WAIT).expect("delivered after close");
            assert_eq!(io.status(), IoStatus::Success);
            io.token
        })
        .collect();
    tokens.sort();
    assert_eq!(tokens, (0..8).collect::<Vec<_>>());
    assert_eq!(
        t.rpc("bdev_delay_delete", json!({"name": "d7"})).unwrap(),
        json!(true)
    );
    t.stop();
}

#[test]
fn reset_unsupported_types_and_resize_events() {
    let t = TestApp::start();
    let f = TempFile::new("ro", 1 << 20);
    t.rpc(
        "bdev_aio_create",
        json!({"name": "ro0", "filename": f.path(), "readonly": true}),
    )
    .unwrap();
    let info = t.bdev_info("ro0");
    assert_eq!(info["supported_io_types"]["write"], false);
    let w = t.io(t.main, "ro0", write_io(0, 1, 4096, 1));
    assert_eq!(w.status(), IoStatus::Unsupported);
    assert_eq!(
        w.status().nvme(),
        NvmeStatus {
            sct: 0,
            sc: 1,
            dnr: true
        }
    );
    assert_eq!(
        t.io(t.main, "ro0", BdevIo::new(IoType::Reset, 0, 0))
            .status(),
        IoStatus::Success
    );
    assert_eq!(
        t.io(t.main, "ro0", read_io(1, 1, 4096)).status(),
        IoStatus::Success
    );
    t.rpc(
        "bdev_null_create",
        json!({"name": "n8", "num_blocks": 256, "block_size": 4096}),
    )
    .unwrap();
    let (ev_tx, ev_rx) = mpsc::channel();
    t.on(t.other, move |tx: mpsc::Sender<()>| {
        let desc = open("n8", move |ev| {
            let _ = ev_tx.send(ev);
        })
        .unwrap();
        HELD.with(|h| h.borrow_mut().push(Box::new(desc)));
        tx.send(()).unwrap();
    });
    t.rpc("bdev_null_resize", json!({"name": "n8", "new_size": 4}))
        .unwrap();
    assert_eq!(ev_rx.recv_timeout(WAIT).unwrap(), BdevEvent::Resize);
    t.on(t.other, |tx: mpsc::Sender<()>| {
        HELD.with(|h| h.borrow_mut().clear());
        tx.send(()).unwrap();
    });
    t.stop();
}

#[test]
fn rpc_errors_are_answers() {
    let t = TestApp::start();
    let missing = t.rpc(
        "bdev_uring_create",
        json!({"name": "u9", "filename": "/nonexistent/pollux-bdev"}),
    );
    let e = missing.unwrap_err();
    assert!(
        e.code == -libc::ENOENT || e.message.contains("io_uring"),
        "{e}"
    );
    let e = t
        .rpc(
            "bdev_aio_create",
            json!({"name": "a9", "filename": "/dev/null"}),
        )
        .unwrap_err();
    assert!(
        e.message
            .contains("neither a regular file nor a block device"),
        "{e}"
    );
    let e = t
        .rpc(
            "bdev_delay_create",
            json!({"name": "d9", "base_bdev_name": "nope", "avg_read_latency": 1,
                   "p99_read_latency": 1, "avg_write_latency": 1, "p99_write_latency": 1}),
        )
        .unwrap_err();
    assert_eq!(e.code, -libc::ENODEV, "{e}");
    let e = t
        .rpc(
            "bdev_malloc_create",
            json!({"name": "m9", "num_blocks": 8, "block_size": 1000}),
        )
        .unwrap_err();
    assert_eq!(e.code, crate::rpc::code::INVALID_PARAMS);
    assert!(e.message.contains("block_size"), "{e}");
    let e = t
        .rpc(
            "bdev_malloc_create",
            json!({"name": "m9", "num_blocks": 8, "block_size": 512, "md_size": 8}),
        )
        .unwrap_err();
    assert!(e.message.contains("md_size"), "{e}");
    let e = t
        .rpc(
            "bdev_malloc_create",
            json!({"name": "m9", "num_blocks": u64::MAX, "block_size": 4096}),
        )
        .unwrap_err();
    assert!(e.message.contains("overflows"), "{e}");
    let e = t
        .rpc(
            "bdev_malloc_create",
            json!({"num_blocks": "8", "block_size": 512}),
        )
        .unwrap_err();
    assert!(e.message.contains("num_blocks"), "{e}");
    // the auto-named malloc and a delay update on a bdev of another module
    assert_eq!(
        t.rpc(
            "bdev_malloc_create",
            json!({"num_blocks": 8, "block_size": 512})
        )
        .unwrap(),
        json!("Malloc0")
    );
    let e = t
        .rpc(
            "bdev_delay_update_latency",
            json!({"delay_bdev_name": "Malloc0", "latency_type": "avg_read", "latency_us": 1}),
        )
        .unwrap_err();
    assert_eq!(e.code, -libc::ENODEV, "{e}");
    let e = t.rpc("bdev_wait_for_examine", json!({"x": 1})).unwrap_err();
    assert_eq!(e.code, crate::rpc::code::INVALID_PARAMS);
    t.stop();
}
