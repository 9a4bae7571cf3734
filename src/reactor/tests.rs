use super::*;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::sync::Mutex;

fn two_cores() -> Vec<u32> {
    let avail: Vec<u32> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id as u32)
        .collect();
    avail.into_iter().take(2).collect()
}

fn start_app(cores: Vec<u32>, init: impl FnOnce() + Send + 'static) -> AppHandle {
    start(
        ReactorConfig {
            cores,
            idle: IdleStrategy::SpinThenSleep(Duration::from_micros(100)),
            pin: true,
        },
        init,
    )
    .expect("start reactors")
}

#[test]
fn core_mask_forms() {
    assert_eq!(parse_core_mask("0x3").unwrap(), vec![0, 1]);
    assert_eq!(parse_core_mask("5").unwrap(), vec![0, 2]);
    assert_eq!(parse_core_mask("[0,1]").unwrap(), vec![0, 1]);
    assert_eq!(parse_core_mask("[2-4, 7]").unwrap(), vec![2, 3, 4, 7]);
    assert!(parse_core_mask("0x0").is_err());
    assert!(parse_core_mask("[1,1]").is_err());
    assert!(parse_core_mask("[1").is_err());
    assert!(parse_core_mask("zz").is_err());
}

#[test]
fn unavailable_core_is_an_error() {
    let err = start(
        ReactorConfig {
            cores: vec![4000],
            ..Default::default()
        },
        || {},
    )
    .err()
    .expect("core 4000 cannot exist");
    assert!(
        matches!(err, ReactorError::CoreUnavailable { core: 4000, .. }),
        "{err}"
    );
}

#[test]
fn reactors_are_pinned_and_messages_round_trip() {
    let cores = two_cores();
    let (tx, rx) = mpsc::channel();
    let cores2 = cores.clone();
    let app = start_app(cores.clone(), move || {
        let here = current_core().unwrap();
        // SAFETY-free check of the CPU we actually run on.
        let cpu = unsafe_free_cpu();
        let other = *cores2.last().unwrap();
        send_to(other, move || {
            let there = (current_core().unwrap(), unsafe_free_cpu());
            send_to(here, move || {
                tx.send(((here, cpu), there, is_main_reactor())).unwrap();
            });
        });
    });
    let ((main, main_cpu), (other, other_cpu), back_on_main) =
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(main, cores[0]);
    assert_eq!(main_cpu, cores[0]);
    assert_eq!(other, *cores.last().unwrap());
    assert_eq!(other_cpu, *cores.last().unwrap());
    assert!(back_on_main);
    app.shutdown();
    app.wait();
}

fn unsafe_free_cpu() -> u32 {
    // sched_getcpu through /proc would be slow; the affinity mask of a pinned thread has
    // exactly one CPU, which is what we want to check.
    let ids = core_affinity::get_core_ids().unwrap();
    assert_eq!(ids.len(), 1, "a pinned reactor sees exactly one core");
    ids[0].id as u32
}

#[test]
fn timed_poller_runs_at_its_period_and_unregisters_itself() {
    let (tx, rx) = mpsc::channel();
    let app = start_app(vec![two_cores()[0]], move || {
        let count = Rc::new(Cell::new(0u32));
        let handle: Rc<RefCell<Option<PollerHandle>>> = Rc::new(RefCell::new(None));
        let (c, h) = (count.clone(), handle.clone());
        let started = Instant::now();
        let poller = register_poller("tick", 10_000, move || {
            c.set(c.get() + 1);
            if c.get() == 5 {
                h.borrow_mut().take().unwrap().unregister();
                tx.send((c.get(), started.elapsed())).unwrap();
            }
            PollStatus::Busy
        });
        *handle.borrow_mut() = Some(poller);
    });
    let (count, elapsed) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(count, 5);
    // Five runs of a 10 ms poller cannot complete before 50 ms (a lower bound only).
    assert!(elapsed >= Duration::from_millis(50), "{elapsed:?}");
    app.shutdown();
    app.wait();
}

#[test]
fn paused_poller_does_not_run() {
    let (tx, rx) = mpsc::channel();
    let app = start_app(vec![two_cores()[0]], move || {
        let runs = Rc::new(Cell::new(0u32));
        let r = runs.clone();
        let p = register_poller("paused", 0, move || {
            r.set(r.get() + 1);
            PollStatus::Idle
        });
        p.pause();
        let mut checks = 0;
        register_poller("checker", 1_000, move || {
            checks += 1;
            if checks == 20 {
                tx.send(runs.get()).unwrap();
            }
            PollStatus::Idle
        });
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 0);
    app.shutdown();
    app.wait();
}

#[test]
fn for_each_reactor_visits_all_then_completes_on_caller() {
    let cores = two_cores();
    let (tx, rx) = mpsc::channel();
    let app = start_app(cores.clone(), move || {
        let visited = Arc::new(Mutex::new(Vec::new()));
        let v = visited.clone();
        let origin = current_core().unwrap();
        for_each_reactor(
            move || v.lock().unwrap().push(current_core().unwrap()),
            move || {
                let got = visited.lock().unwrap().clone();
                tx.send((got, current_core().unwrap() == origin)).unwrap();
            },
        );
    });
    let (visited, on_origin) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(visited, cores);
    assert!(on_origin);
    app.shutdown();
    app.wait();
}

#[test]
fn shutdown_hooks_run_in_reverse_order() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let o = order.clone();
    let app = start_app(vec![two_cores()[0]], move || {
        for name in ["first", "second", "third"] {
            let o = o.clone();
            register_shutdown_hook(name, move |done| {
                o.lock().unwrap().push(name);
                done();
            });
        }
    });
    // Let init run before asking for shutdown.
    let (tx, rx) = mpsc::channel();
    app.send_to(app.main_core(), move || tx.send(()).unwrap())
        .unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    app.shutdown();
    app.wait();
    assert_eq!(*order.lock().unwrap(), vec!["third", "second", "first"]);
}

#[test]
fn idle_reactors_sleep_and_wake_for_messages() {
    let cores = two_cores();
    let app = start_app(cores.clone(), || {
        // An active poller that never finds work must not keep the core spinning.
        register_poller("idle", 0, || PollStatus::Idle);
    });
    std::thread::sleep(Duration::from_millis(100));
    let reactor_cpu = |app: &AppHandle| -> Duration {
        let (tx, rx) = mpsc::channel();
        for &core in &app.cores() {
            let tx = tx.clone();
            app.send_to(core, move || tx.send(thread_cpu_time()).unwrap())
                .unwrap();
        }
        (0..app.cores().len())
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .sum()
    };
    let cpu_before = reactor_cpu(&app);
    let wall = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let cpu = reactor_cpu(&app) - cpu_before;
    let share = cpu.as_secs_f64() / wall.elapsed().as_secs_f64();
    assert!(
        share < 0.05,
        "idle reactors used {:.1}% of a core",
        share * 100.0
    );

    // A message still reaches a sleeping reactor promptly (no wall-time bound: just arrival).
    let (tx, rx) = mpsc::channel();
    let counter = Arc::new(AtomicUsize::new(0));
    for &core in &cores {
        let tx = tx.clone();
        let c = counter.clone();
        app.send_to(core, move || {
            c.fetch_add(1, Ordering::SeqCst);
            tx.send(stats()).unwrap();
        })
        .unwrap();
    }
    for _ in &cores {
        let stats = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(stats.sleeps > 0, "reactor {} never slept", stats.core);
    }
    assert_eq!(counter.load(Ordering::SeqCst), cores.len());
    app.shutdown();
    app.wait();
}

#[test]
fn full_queue_pushes_back_off_reactor() {
    // A reactor blocked in a long message cannot drain; the queue fills and send_to fails.
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let app = start_app(vec![two_cores()[0]], || {});
    let core = app.main_core();
    app.send_to(core, move || {
        let _ = gate_rx.recv_timeout(Duration::from_secs(10));
    })
    .unwrap();
    let mut full = false;
    for _ in 0..(MESSAGE_QUEUE_DEPTH + 10) {
        if let Err(e) = app.send_to(core, || {}) {
            assert_eq!(e.reason, SendErrorKind::Full);
            full = true;
            break;
        }
    }
    assert!(full);
    gate_tx.send(()).unwrap();
    app.shutdown();
    app.wait();
}

#[test]
fn wake_driven_poller_sleeps_through_its_period_and_runs_on_a_wake() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    let (mut outside, inside) = UnixStream::pair().expect("socketpair");
    inside.set_nonblocking(true).expect("nonblocking");
    let idle_runs = Arc::new(AtomicUsize::new(0));
    let (got_tx, got_rx) = mpsc::channel::<u8>();
    let idle_runs2 = idle_runs.clone();
    let app = start_app(vec![two_cores()[0]], move || {
        // A 1 ms wake-driven poller with no work: it must not keep the reactor awake.
        register_wake_driven_poller("wake_driven_1ms", 1_000, move || {
            idle_runs2.fetch_add(1, Ordering::SeqCst);
            PollStatus::Idle
        });
        // A one-hour wake-driven poller owning the wake fd: after its first run only a wake
        // can make it run again within the test.
        let wake = add_wake_fd(inside.as_raw_fd()).expect("wake fd");
        let mut inside = inside;
        register_wake_driven_poller("wake_driven_1h", 3_600_000_000, move || {
            let _keep = &wake;
            let mut b = [0u8; 1];
            match inside.read(&mut b) {
                Ok(1) => {
                    got_tx.send(b[0]).unwrap();
                    PollStatus::Busy
                }
                _ => PollStatus::Idle,
            }
        });
    });
    // A plain 1 ms timed poller would run ~300 times here; a wake-driven one runs on its
    // first pass and while the reactor spins before sleeping, then not until a wake.
    std::thread::sleep(Duration::from_millis(300));
    let runs = idle_runs.load(Ordering::SeqCst);
    assert!(runs >= 1, "the poller runs once after registration");
    assert!(
        runs < 50,
        "an idle reactor ran its wake-driven poller {runs} times in 300 ms"
    );
    // A byte on the wake fd wakes the reactor, and the one-hour poller runs and finds it.
    outside.write_all(&[42]).unwrap();
    assert_eq!(got_rx.recv_timeout(Duration::from_secs(5)), Ok(42));
    app.shutdown();
    app.wait();
}
