//! The target's publication is incremental: after 1,000 changes every reactor's view
//! equals one built from scratch; a change to one subsystem leaves every other subsystem's
//! snapshot the same object; namespace channels exist on a reactor only while an I/O queue
//! of their subsystem is connected there. Nothing here is timed (bench/scale.sh measures).

mod common;

use common::nvme::{call, Host};
use pollux::nvmf::target::{with_target, TargetView};
use pollux::nvmf::tcp::{self, NsKey};
use serde_json::{json, Value};
use std::sync::{mpsc, Arc};
use std::time::Duration;

fn start(tag: &str) -> pollux::app::RunningApp {
    let mut opts = common::test_options(tag);
    // Two reactors where the machine has two cores: the views of both are checked.
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        opts.cores = vec![0, 1];
    }
    common::start(opts)
}

fn rpc(app: &pollux::app::RunningApp, method: &str, params: Value) -> Value {
    call(app, method, params).unwrap_or_else(|e| panic!("{method}: {e}"))
}

/// Runs `f` on `core` and returns its answer.
fn on<R: Send + 'static>(
    app: &pollux::app::RunningApp,
    core: u32,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    app.handle()
        .send_to(core, move || {
            let _ = tx.send(f());
        })
        .expect("send");
    rx.recv_timeout(Duration::from_secs(10)).expect("answer")
}

/// The registry's view, and one built from scratch from deep copies of its subsystems.
fn registry_and_fresh(app: &pollux::app::RunningApp) -> (TargetView, TargetView) {
    let main = app.handle().main_core();
    on(app, main, || {
        with_target(|t| {
            let v = t.view().clone();
            let fresh = TargetView::build(
                v.genctr,
                v.transport.clone(),
                v.iter().map(|s| Arc::new((**s).clone())),
            );
            (v, fresh)
        })
    })
}

fn local_views(app: &pollux::app::RunningApp) -> Vec<(u32, Arc<TargetView>, Vec<NsKey>)> {
    app.handle()
        .cores()
        .into_iter()
        .filter_map(|core| on(app, core, tcp::local_view).map(|(v, chans)| (core, v, chans)))
        .collect()
}

/// A new null bdev `name` (1024 blocks of 4 KiB) added as a namespace of `nqn`.
fn null_namespace(app: &pollux::app::RunningApp, nqn: &str, name: &str) {
    rpc(
        app,
        "bdev_null_create",
        json!({"name": name, "num_blocks": 1024, "block_size": 4096}),
    );
    rpc(
        app,
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": name}}),
    );
}

fn nqn(i: usize) -> String {
    format!("nqn.2016-06.io.pollux:scale{i}")
}

#[test]
fn every_reactor_view_equals_a_fresh_one_after_1000_changes() {
    let app = start("scale-views");
    rpc(&app, "nvmf_create_transport", json!({"trtype": "TCP"}));
    let mut changes = 0;
    let mut port = None;
    let mut next_bdev = 0;
    let mut host = None;
    for i in 0..60 {
        rpc(
            &app,
            "nvmf_create_subsystem",
            json!({"nqn": nqn(i), "allow_any_host": i % 3 != 0}),
        );
        let l = json!({"nqn": nqn(i), "listen_address": {"trtype": "TCP", "adrfam": "IPv4",
            "traddr": "127.0.0.1", "trsvcid": port.map_or("0".to_string(), |p: u16| p.to_string())}});
        rpc(&app, "nvmf_subsystem_add_listener", l);
        if port.is_none() {
            let got = rpc(&app, "nvmf_subsystem_get_listeners", json!({"nqn": nqn(0)}));
            port = got[0]["address"]["trsvcid"]
                .as_str()
                .and_then(|p| p.parse().ok());
        }
        rpc(
            &app,
            "nvmf_subsystem_add_host",
            json!({"nqn": nqn(i), "host": common::nvme::HOSTNQN}),
        );
        changes += 3;
        for _ in 0..4 {
            let b = format!("Null{next_bdev}");
            next_bdev += 1;
            null_namespace(&app, &nqn(i), &b);
            changes += 1;
        }
        if i == 5 {
            // A host with an admin and an I/O queue on subsystem 5 while the rest changes.
            let p = port.expect("port");
            let admin = Host::admin_connect(p, &nqn(5), false, 0);
            let io = Host::io_connect(p, &nqn(5), admin.cntlid, 1, false);
            host = Some((admin, io));
        }
    }
    // Churn: remove and re-add namespaces, hosts, listeners; delete some subsystems.
    let mut round = 0;
    while changes < 1000 {
        let i = round % 60;
        round += 1;
        if i % 7 == 3 && round < 60 {
            rpc(&app, "nvmf_delete_subsystem", json!({"nqn": nqn(i)}));
            changes += 1;
            continue;
        }
        let exists = call(&app, "nvmf_get_subsystems", json!({"nqn": nqn(i)})).is_ok();
        if !exists {
            continue;
        }
        rpc(
            &app,
            "nvmf_subsystem_remove_ns",
            json!({"nqn": nqn(i), "nsid": 1 + (round % 4)}),
        );
        let b = format!("Null{next_bdev}");
        next_bdev += 1;
        rpc(
            &app,
            "bdev_null_create",
            json!({"name": b, "num_blocks": 2048, "block_size": 512}),
        );
        rpc(
            &app,
            "nvmf_subsystem_add_ns",
            json!({"nqn": nqn(i), "namespace": {"bdev_name": b, "nsid": 1 + (round % 4)}}),
        );
        rpc(
            &app,
            "nvmf_subsystem_remove_host",
            json!({"nqn": nqn(i), "host": common::nvme::HOSTNQN}),
        );
        rpc(
            &app,
            "nvmf_subsystem_add_host",
            json!({"nqn": nqn(i), "host": common::nvme::HOSTNQN}),
        );
        changes += 4;
    }
    assert!(changes >= 1000);
    let (registry, fresh) = registry_and_fresh(&app);
    assert_eq!(
        registry, fresh,
        "the registry's indexes equal ones built from scratch"
    );
    let views = local_views(&app);
    assert!(!views.is_empty());
    for (core, v, chans) in &views {
        assert_eq!(
            v.version, registry.version,
            "reactor {core} has the last version"
        );
        assert_eq!(**v, fresh, "reactor {core}'s view equals a fresh one");
        // Channels only for subsystem 5 (the one with an I/O queue), on its reactor.
        let s5 = v.by_nqn(&nqn(5)).expect("subsystem 5").clone();
        for (sid, nsid) in chans {
            assert_eq!(
                *sid, s5.id,
                "reactor {core}: a channel of an unused subsystem"
            );
            assert!(
                s5.namespaces.contains_key(nsid),
                "reactor {core}: stale channel {nsid}"
            );
        }
    }
    let s5 = fresh.by_nqn(&nqn(5)).expect("subsystem 5").clone();
    let with_chans: Vec<_> = views.iter().filter(|(_, _, c)| !c.is_empty()).collect();
    assert_eq!(with_chans.len(), 1, "one reactor holds the I/O queue");
    assert_eq!(
        with_chans[0].2.len(),
        s5.namespaces.len(),
        "every namespace of subsystem 5"
    );
    // The host still works after all that.
    let (admin, io) = host.take().expect("host");
    drop(io);
    drop(admin);
    app.shutdown_and_wait();
}

#[test]
fn a_namespace_added_to_one_subsystem_leaves_the_others_untouched() {
    let app = start("scale-share");
    rpc(&app, "nvmf_create_transport", json!({"trtype": "TCP"}));
    for i in 0..3 {
        rpc(
            &app,
            "nvmf_create_subsystem",
            json!({"nqn": nqn(i), "allow_any_host": true}),
        );
        null_namespace(&app, &nqn(i), &format!("N{i}"));
    }
    let before = local_views(&app);
    null_namespace(&app, &nqn(0), "Extra");
    let after = local_views(&app);
    for ((core, old, _), (_, new, _)) in before.iter().zip(after.iter()) {
        assert_eq!(new.version, old.version + 1);
        let a = new.by_nqn(&nqn(0)).unwrap();
        assert_eq!(
            new.changed.as_ref(),
            &[a.id],
            "reactor {core}: only A changed"
        );
        assert!(!Arc::ptr_eq(old.by_nqn(&nqn(0)).unwrap(), a));
        assert_eq!(a.namespaces.len(), 2);
        for i in 1..3 {
            assert!(
                Arc::ptr_eq(old.by_nqn(&nqn(i)).unwrap(), new.by_nqn(&nqn(i)).unwrap()),
                "reactor {core}: subsystem {i} is the same object"
            );
        }
        // The unchanged namespace of A itself is shared by the persistent map too.
        let (o1, n1) = (
            &old.by_nqn(&nqn(0)).unwrap().namespaces[&1],
            &a.namespaces[&1],
        );
        assert!(Arc::ptr_eq(&o1.bdev, &n1.bdev));
    }
    app.shutdown_and_wait();
}

#[test]
fn namespace_channels_open_with_the_first_io_queue_and_close_with_the_last() {
    let app = start("scale-chan");
    rpc(&app, "nvmf_create_transport", json!({"trtype": "TCP"}));
    let mut port = 0;
    for i in 0..2 {
        rpc(
            &app,
            "nvmf_create_subsystem",
            json!({"nqn": nqn(i), "allow_any_host": true}),
        );
        for j in 0..3 {
            let b = format!("C{i}_{j}");
            null_namespace(&app, &nqn(i), &b);
        }
        let l = rpc(
            &app,
            "nvmf_subsystem_add_listener",
            json!({"nqn": nqn(i), "listen_address": {"trtype": "TCP", "adrfam": "IPv4",
                "traddr": "127.0.0.1", "trsvcid": if i == 0 { "0".to_string() } else { port.to_string() }}}),
        );
        let _ = l;
        if i == 0 {
            let got = rpc(&app, "nvmf_subsystem_get_listeners", json!({"nqn": nqn(0)}));
            port = got[0]["address"]["trsvcid"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
        }
    }
    let open = |app: &pollux::app::RunningApp| -> Vec<(u64, u32)> {
        let mut all: Vec<(u64, u32)> = local_views(app)
            .into_iter()
            .flat_map(|(_, _, c)| c)
            .collect();
        all.sort_unstable();
        all
    };
    assert!(
        open(&app).is_empty(),
        "no channel while no host uses a namespace"
    );
    let mut admin = Host::admin_connect(port, &nqn(1), false, 0);
    assert!(open(&app).is_empty(), "an admin queue opens no channel");
    let io = Host::io_connect(port, &nqn(1), admin.cntlid, 1, false);
    let sid1 = registry_and_fresh(&app).0.by_nqn(&nqn(1)).unwrap().id;
    assert_eq!(open(&app), vec![(sid1, 1), (sid1, 2), (sid1, 3)]);
    // A namespace added while the queue is there opens at once; one removed closes.
    null_namespace(&app, &nqn(1), "Late");
    rpc(
        &app,
        "nvmf_subsystem_remove_ns",
        json!({"nqn": nqn(1), "nsid": 2}),
    );
    assert_eq!(open(&app), vec![(sid1, 1), (sid1, 3), (sid1, 4)]);
    let d = admin.identify(1, 0);
    assert!(d.ok());
    drop(io);
    let mut closed = false;
    for _ in 0..200 {
        if open(&app).is_empty() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        closed,
        "the last I/O queue took its channels with it: {:?}",
        open(&app)
    );
    drop(admin);
    app.shutdown_and_wait();
}
