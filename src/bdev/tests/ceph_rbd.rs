//! The rbd module on a throw-away Ceph cluster (skipped loudly without the Ceph packages,
//! a failure with POLLUX_REQUIRE_CEPH set).

use super::*;

/// A dev Ceph cluster for this test, or None (with the reason printed loudly) when the Ceph
/// packages are absent. CI installs them, so there the test runs.
fn ceph_cluster(tag: &str) -> Option<rbd::DevCluster> {
    if let Some(why) = rbd::DevCluster::unavailable_or_panic() {
        // Written to the process's stderr, not through `eprintln!`, which the test harness
        // swallows for a test that passes: a skip must show in every run.
        if std::env::var_os("POLLUX_NO_SKIP").is_some() {
            panic!("the RBD test {tag}: {why} (POLLUX_NO_SKIP is set, so this is a failure)");
        }
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: bdev::tests::ceph_rbd ({tag}): {why}"
        );
        return None;
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-dev-cluster.sh");
    Some(rbd::DevCluster::start(&script, tag).expect("start the dev Ceph cluster"))
}

/// How many clusters `bdev_rbd_get_clusters_info` lists.
fn registered_clusters(t: &TestApp) -> usize {
    t.rpc("bdev_rbd_get_clusters_info", json!({}))
        .unwrap()
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn rbd_suite_resize_and_errors() {
    let Some(c) = ceph_cluster("suite") else {
        return;
    };
    c.create_image("img0", 8).unwrap();
    let t = TestApp::start();
    let r = t.rpc(
        "bdev_rbd_register_cluster",
        json!({"name": "c0", "config_file": c.conf}),
    );
    assert_eq!(r.unwrap(), json!("c0"));
    let r = t.rpc(
        "bdev_rbd_create",
        json!({"name": "r0", "pool_name": "rbd", "rbd_name": "img0", "block_size": 512,
               "cluster_name": "c0"}),
    );
    assert_eq!(r.unwrap(), json!("r0"));
    let info = t.bdev_info("r0");
    assert_eq!(info["num_blocks"], 8 * 2048);
    assert_eq!(info["product_name"], rbd::PRODUCT_NAME);
    for ty in ["read", "write", "flush", "unmap", "write_zeroes"] {
        assert_eq!(info["supported_io_types"][ty], true, "{ty}");
    }
    module_suite(&t, "r0");

    // Clusters: info shape, and in use.
    let ci = t
        .rpc("bdev_rbd_get_clusters_info", json!({"name": "c0"}))
        .unwrap();
    assert_eq!(ci["cluster_name"], "c0");
    assert_eq!(ci["config_file"], json!(c.conf));
    assert_eq!(registered_clusters(&t), 1);
    let e = t
        .rpc("bdev_rbd_unregister_cluster", json!({"name": "c0"}))
        .unwrap_err();
    assert_eq!(e.code, -libc::EBUSY, "{e:?}");
    assert!(e.message.contains("r0"), "{e:?}");

    // The config replays the cluster before the bdev.
    let cfg = t.config();
    let methods: Vec<&str> = cfg.iter().filter_map(|e| e["method"].as_str()).collect();
    let reg = methods
        .iter()
        .position(|m| *m == "bdev_rbd_register_cluster")
        .unwrap();
    let cre = methods
        .iter()
        .position(|m| *m == "bdev_rbd_create")
        .unwrap();
    assert!(reg < cre, "{methods:?}");

    // Resize through the RPC (MiB), refused when shrinking; then by another client.
    assert_eq!(
        t.rpc("bdev_rbd_resize", json!({"name": "r0", "new_size": 16}))
            .unwrap(),
        json!(true)
    );
    assert_eq!(t.bdev_info("r0")["num_blocks"], 16 * 2048);
    let e = t
        .rpc("bdev_rbd_resize", json!({"name": "r0", "new_size": 4}))
        .unwrap_err();
    assert_eq!(e.code, crate::rpc::code::INVALID_PARAMS, "{e:?}");
    c.rbd(&["resize", "--size", "24M", "rbd/img0"]).unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    while t.bdev_info("r0")["num_blocks"] != 24 * 2048 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        t.bdev_info("r0")["num_blocks"],
        24 * 2048,
        "outside resize noticed"
    );

    // Errors: each names what is wrong, in bounded time, and leaves nothing behind.
    let bad = |params: Value| {
        let started = Instant::now();
        let e = t.rpc("bdev_rbd_create", params).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{e:?} took {:?}",
            started.elapsed()
        );
        assert!(
            t.rpc("bdev_get_bdevs", json!({"name": "bad"})).is_err(),
            "nothing half-made"
        );
        e
    };
    let e = bad(
        json!({"name": "bad", "pool_name": "nopool", "rbd_name": "img0", "block_size": 512, "cluster_name": "c0"}),
    );
    assert!(
        e.message.contains("pool_name") && e.message.contains("nopool"),
        "{e:?}"
    );
    let e = bad(
        json!({"name": "bad", "pool_name": "rbd", "rbd_name": "noimg", "block_size": 512, "cluster_name": "c0"}),
    );
    assert!(
        e.message.contains("rbd_name") && e.message.contains("noimg"),
        "{e:?}"
    );
    let e = bad(
        json!({"name": "bad", "pool_name": "rbd", "rbd_name": "img0", "block_size": 512, "cluster_name": "nocluster"}),
    );
    assert_eq!(e.code, crate::rpc::code::INVALID_PARAMS);
    assert!(e.message.contains("cluster_name"), "{e:?}");
    let e = bad(
        json!({"name": "bad", "pool_name": "rbd", "rbd_name": "img0", "block_size": 1000, "cluster_name": "c0"}),
    );
    assert!(e.message.contains("block_size"), "{e:?}");
    let e =
        bad(json!({"name": "bad", "pool_name": "rbd", "rbd_name": "img0", "cluster_name": "c0"}));
    assert_eq!(e.code, crate::rpc::code::INVALID_PARAMS);
    assert!(e.message.contains("block_size"), "{e:?}");
    let e = bad(
        json!({"name": "bad", "pool_name": "rbd", "rbd_name": "img0", "block_size": 512, "cluster_name": "c0", "bogus": 1}),
    );
    assert!(e.message.contains("bogus"), "{e:?}");
    // Wrong key and unreachable monitor: clusters that never register.
    let wrong_key = c.dir.join("wrong.keyring");
    std::fs::write(
        &wrong_key,
        "[client.admin]\n\tkey = AQBgxdZkAAAAABAAoSsvPQlW3N9DAhP0e8dQLw==\n",
    )
    .unwrap();
    let started = Instant::now();
    let e = t
        .rpc(
            "bdev_rbd_register_cluster",
            json!({"name": "k", "config_file": c.conf, "key_file": wrong_key}),
        )
        .unwrap_err();
    assert!(e.message.contains("rados_connect"), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let started = Instant::now();
    let e = t
        .rpc("bdev_rbd_register_cluster", json!({"name": "m", "config_param": {"mon_host": "127.0.0.1:1", "client_mount_timeout": "3"}}))
        .unwrap_err();
    assert!(e.message.contains("rados_connect"), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(registered_clusters(&t), 1);
    let e = t
        .rpc(
            "bdev_rbd_register_cluster",
            json!({"name": "c0", "config_file": c.conf}),
        )
        .unwrap_err();
    assert_eq!(e.code, -libc::EEXIST, "{e:?}");

    // Delete under I/O, then the cluster can go.
    delete_in_flight(&t, "r0", "bdev_rbd_delete");
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        match t.rpc("bdev_rbd_unregister_cluster", json!({"name": "c0"})) {
            Ok(v) => break assert_eq!(v, json!(true)),
            Err(e) if Instant::now() < until && e.code == -libc::EBUSY => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    t.stop();
}
