//! dhchap-connect: the connect latency DH-HMAC-CHAP adds, per DH group, measured with pollux's host library against an in-process pollux.
//!
//! One pollux (one reactor, `--target-core`) exports a malloc namespace on 127.0.0.1 with
//! two allowed hosts: one without a key (the baseline) and one with a host key (and,
//! with `--bidirectional`, a controller key). Each round connects once per case — no
//! authentication, then the NULL group and ffdhe2048 .. ffdhe8192 with `--digest` — in
//! that order, with `--io-queues` I/O queues (every queue authenticates), and disconnects.
//! A connect is timed from the call to a controller ready for I/O (TCP, ICReq, Connect,
//! the transaction on each queue, the bring-up commands). After `--rounds` rounds it
//! prints, per case, the median and min/max in milliseconds and the ratio of the median to
//! the baseline's, and the load average before and after.

use clap::Parser;
use pollux::app::{AppOptions, RunningApp};
use pollux::nvmf::host::{ConnectOpts, DhchapOpts, SyncController, TransportId};
use pollux::nvmf::secret::DhchapSecret;
use pollux::reactor::IdleStrategy;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "dhchap-connect",
    about = "DH-HMAC-CHAP connect latency per DH group"
)]
struct Args {
    /// Connects per case.
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// I/O queues per controller (each authenticates like the admin queue).
    #[arg(long, default_value_t = 1)]
    io_queues: u16,
    /// Hash of the transactions (sha256, sha384, sha512).
    #[arg(long, default_value = "sha256")]
    digest: String,
    /// Ask the controller to prove a controller key too.
    #[arg(long)]
    bidirectional: bool,
    /// The target's reactor core.
    #[arg(long, default_value_t = 0)]
    target_core: u32,
}

const NQN: &str = "nqn.2016-06.io.pollux:dhchap-bench";
const HOST_AUTH: &str = "nqn.2014-08.org.nvmexpress:uuid:dddddddd-0000-0000-0000-000000000001";
const HOST_PLAIN: &str = "nqn.2014-08.org.nvmexpress:uuid:dddddddd-0000-0000-0000-000000000002";
/// The DH groups, by id, as the target's configuration names them.
const GROUPS: [&str; 6] = pollux::nvmf::target::DHGROUP_NAMES;

fn rpc(app: &RunningApp, method: &str, params: Value) -> Result<Value, String> {
    app.call(method, params, Duration::from_secs(30))
        .ok_or_else(|| format!("{method}: no answer"))?
        .map_err(|e| format!("{method}: {}", e.message))
}

fn secret(byte: u8, len: usize) -> DhchapSecret {
    DhchapSecret {
        transform: None,
        key: vec![byte; len],
    }
}

/// Starts pollux and exports the subsystem; returns the port.
fn setup(app: &RunningApp, dir: &std::path::Path, bidirectional: bool) -> Result<u16, String> {
    for (name, s) in [("hk", secret(1, 32)), ("ck", secret(2, 32))] {
        let path = dir.join(name);
        std::fs::write(&path, s.format()).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        rpc(
            app,
            "keyring_file_add_key",
            json!({"name": name, "path": path.display().to_string()}),
        )?;
    }
    rpc(app, "nvmf_create_transport", json!({"trtype": "TCP"}))?;
    rpc(
        app,
        "bdev_malloc_create",
        json!({"name": "Malloc0", "num_blocks": 4096, "block_size": 4096}),
    )?;
    rpc(app, "nvmf_create_subsystem", json!({"nqn": NQN}))?;
    rpc(
        app,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc0"}}),
    )?;
    let mut auth_host = json!({"nqn": NQN, "host": HOST_AUTH, "dhchap_key": "hk"});
    if bidirectional {
        auth_host["dhchap_ctrlr_key"] = json!("ck");
    }
    rpc(app, "nvmf_subsystem_add_host", auth_host)?;
    rpc(
        app,
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOST_PLAIN}),
    )?;
    rpc(
        app,
        "nvmf_subsystem_add_listener",
        json!({"nqn": NQN, "listen_address": {"trtype": "tcp", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "0"}}),
    )?;
    let l = rpc(app, "nvmf_subsystem_get_listeners", json!({"nqn": NQN}))?;
    l[0]["address"]["trsvcid"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no listener port in {l}"))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn run(args: &Args) -> Result<(), String> {
    let digest = pollux::nvmf::host::hash_by_name(&args.digest)
        .ok_or_else(|| format!("unknown digest {:?}", args.digest))?;
    let dir = std::env::temp_dir().join(format!("pollux-dhchap-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let app = pollux::app::start(AppOptions {
        cores: vec![args.target_core],
        rpc_socket: dir.join("rpc.sock"),
        no_default: true,
        pin: false,
        idle: IdleStrategy::SpinThenSleep(Duration::from_micros(100)),
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let port = setup(&app, &dir, args.bidirectional)?;
    let trid = TransportId::tcp("127.0.0.1", port, NQN);
    let load_before = load_average();
    // Case 0: no authentication; then each group.
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); 1 + GROUPS.len()];
    for _ in 0..args.rounds {
        for (case, times) in samples.iter_mut().enumerate() {
            let (hostnqn, dhchap) = if case == 0 {
                (HOST_PLAIN, None)
            } else {
                let mut o =
                    DhchapOpts::new(secret(1, 32), args.bidirectional.then(|| secret(2, 32)));
                o.digests = vec![digest];
                o.dhgroups = vec![case as u8 - 1];
                (HOST_AUTH, Some(o))
            };
            let opts = ConnectOpts {
                hostnqn: Some(hostnqn.into()),
                io_queues: args.io_queues,
                queue_depth: 32,
                dhchap,
                timeout: Duration::from_secs(120),
                ..Default::default()
            };
            let start = Instant::now();
            let c = SyncController::connect(&trid, opts).map_err(|e| {
                format!(
                    "connect ({}): {e}",
                    if case == 0 { "none" } else { GROUPS[case - 1] }
                )
            })?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            c.disconnect().map_err(|e| e.to_string())?;
        }
    }
    let load_after = load_average();
    println!(
        "DH-HMAC-CHAP connect latency: {} rounds, {} I/O queue(s) ({} transactions per connect), {}, {}",
        args.rounds,
        args.io_queues,
        args.io_queues + 1,
        args.digest,
        if args.bidirectional { "bidirectional" } else { "one-way" }
    );
    println!("load average before {load_before}, after {load_after}");
    println!(
        "{:<12} {:>12} {:>10} {:>10} {:>14}",
        "group", "median (ms)", "min", "max", "x no auth"
    );
    let mut base = 0.0;
    for (case, times) in samples.iter_mut().enumerate() {
        let name = if case == 0 { "none" } else { GROUPS[case - 1] };
        let m = median(times);
        if case == 0 {
            base = m;
        }
        println!(
            "{:<12} {:>12.2} {:>10.2} {:>10.2} {:>14.1}",
            name,
            m,
            times[0],
            times[times.len() - 1],
            m / base
        );
    }
    app.shutdown_and_wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() {
    let args = Args::parse();
    if args.rounds == 0 {
        eprintln!("dhchap-connect: --rounds must be at least 1");
        std::process::exit(2);
    }
    if let Err(e) = run(&args) {
        eprintln!("dhchap-connect: {e}");
        std::process::exit(1);
    }
}
