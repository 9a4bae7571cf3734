//! scale-conns: holds many idle NVMe/TCP controllers open (bench/scale.sh's connection part).
//!
//! Connects `--ctrlrs` controllers, each with `--queues` I/O queues, with pollux's host
//! library on one reactor (`--core`, sleeping when idle), round-robin over the subsystems
//! `PREFIX0`..`PREFIX{N-1}` at 127.0.0.1:`--port`, at most `--window` bring-ups in flight.
//! Once all are up it prints one JSON line (`{"ctrlrs", "qpairs", "secs"}`) on stdout and
//! keeps them connected (keep-alives sent by the library) until SIGINT/SIGTERM. Any failed
//! bring-up is one line on stderr and exit status 1.

use clap::Parser;
use pollux::nvmf::host::{ConnectOpts, Controller, TransportId};
use pollux::reactor::{self, AppHandle, IdleStrategy, ReactorConfig};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "scale-conns",
    about = "Hold many idle NVMe/TCP controllers open"
)]
struct Args {
    #[arg(long)]
    port: u16,
    /// Subsystem NQNs are PREFIX0 .. PREFIX{subsystems-1}.
    #[arg(long)]
    subnqn_prefix: String,
    #[arg(long, default_value_t = 1)]
    subsystems: usize,
    #[arg(long)]
    hostnqn: Option<String>,
    #[arg(long, default_value_t = 1000)]
    ctrlrs: usize,
    #[arg(long, default_value_t = 4)]
    queues: u16,
    /// Depth of each I/O queue (the Linux host's default is 128).
    #[arg(long, default_value_t = 128)]
    depth: u16,
    #[arg(long, default_value_t = 10_000)]
    kato_ms: u32,
    #[arg(long, default_value_t = 0)]
    core: u32,
    /// Bring-ups in flight at once.
    #[arg(long, default_value_t = 64)]
    window: usize,
}

thread_local! {
    static HELD: RefCell<Vec<Rc<Controller>>> = const { RefCell::new(Vec::new()) };
}

struct State {
    args: Args,
    next: usize,
    done: usize,
    tx: mpsc::Sender<Result<(), String>>,
}

fn launch(state: &Rc<RefCell<State>>) {
    let (i, args) = {
        let mut s = state.borrow_mut();
        if s.next >= s.args.ctrlrs {
            return;
        }
        s.next += 1;
        (s.next - 1, s.args.clone())
    };
    let nqn = format!("{}{}", args.subnqn_prefix, i % args.subsystems.max(1));
    let trid = TransportId::tcp("127.0.0.1", args.port, &nqn);
    let opts = ConnectOpts {
        hostnqn: args.hostnqn.clone(),
        io_queues: args.queues,
        queue_depth: args.depth,
        kato_ms: args.kato_ms,
        timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let st = state.clone();
    Controller::connect(&trid, opts, move |r| match r {
        Ok(c) => {
            HELD.with(|h| h.borrow_mut().push(c));
            let finished = {
                let mut s = st.borrow_mut();
                s.done += 1;
                s.done == s.args.ctrlrs
            };
            if finished {
                let _ = st.borrow().tx.send(Ok(()));
            } else {
                launch(&st);
            }
        }
        Err(e) => {
            let _ = st
                .borrow()
                .tx
                .send(Err(format!("controller {i} ({nqn}): {e}")));
        }
    });
}

fn main() {
    let args = Args::parse();
    if args.ctrlrs == 0 {
        println!("{{\"ctrlrs\": 0, \"qpairs\": 0, \"secs\": 0}}");
        return;
    }
    let limit = pollux::sys::process::raise_nofile_limit();
    let need = args.ctrlrs * (args.queues as usize + 1) + 64;
    if (limit as usize) < need {
        eprintln!("scale-conns: {need} sockets needed, the fd limit is {limit}");
        std::process::exit(1);
    }
    let on_signals = AppHandle::shutdown_on_signals();
    let (tx, rx) = mpsc::channel();
    let a = args.clone();
    let app = reactor::start(
        ReactorConfig {
            cores: vec![args.core],
            idle: IdleStrategy::default(),
            pin: false,
        },
        move || {
            let window = a.window.max(1);
            let state = Rc::new(RefCell::new(State {
                args: a,
                next: 0,
                done: 0,
                tx,
            }));
            for _ in 0..window {
                launch(&state);
            }
        },
    )
    .unwrap_or_else(|e| {
        eprintln!("scale-conns: {e}");
        std::process::exit(1);
    });
    on_signals(&app);
    let t0 = Instant::now();
    match rx.recv_timeout(Duration::from_secs(600)) {
        Ok(Ok(())) => {
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "{{\"ctrlrs\": {}, \"qpairs\": {}, \"secs\": {secs:.3}}}",
                args.ctrlrs,
                args.ctrlrs * (args.queues as usize + 1)
            );
        }
        Ok(Err(e)) => {
            eprintln!("scale-conns: {e}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("scale-conns: the controllers did not all connect within 600 s");
            std::process::exit(1);
        }
    }
    app.wait();
}
