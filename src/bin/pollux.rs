//! The pollux target application: SPDK-style command line (`-m`, `-r`, `--json`,
//! `--wait-for-rpc`, `-L`, ...), logging to stderr with a filter the log RPCs change at run
//! time, and an orderly shutdown on SIGINT, SIGTERM or `spdk_kill_instance` (exit 0).

#![forbid(unsafe_code)]

use clap::Parser;
use pollux::app::{self, AppOptions};
use pollux::reactor::{self, AppHandle};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "pollux",
    version,
    about = "Polled-mode storage target: pinned reactors, NVMe-oF/TCP, JSON-RPC control"
)]
struct Args {
    /// Reactor core mask: hex (0x3) or list ([0,1], [0-3]); the first core is the main one.
    #[arg(short = 'm', long = "cpumask", default_value = "0x1")]
    cpumask: String,
    /// JSON-RPC Unix socket path.
    #[arg(short = 'r', long = "rpc-socket", default_value = app::DEFAULT_RPC_SOCKET)]
    rpc_socket: PathBuf,
    /// SPDK-format JSON config applied at start-up.
    #[arg(
        short = 'c',
        long = "json",
        visible_alias = "config",
        value_name = "FILE"
    )]
    json: Option<PathBuf>,
    /// Wait in the STARTUP state for the framework_start_init RPC.
    #[arg(long)]
    wait_for_rpc: bool,
    /// Turn on a module's debug log (repeatable; `all` for every module).
    #[arg(short = 'L', long = "logflag", value_name = "FLAG")]
    logflag: Vec<String>,
    /// Log level: ERROR, WARNING, NOTICE, INFO or DEBUG.
    #[arg(long, default_value = "NOTICE")]
    log_level: String,
    /// Never sleep: reactors poll continuously.
    #[arg(long)]
    poll_only: bool,
    /// How long an idle reactor keeps polling before it sleeps, in microseconds.
    #[arg(long, default_value_t = 200, value_name = "US")]
    idle_spin_us: u64,
    /// Do not pin reactor threads to their cores.
    #[arg(long)]
    no_pin: bool,
    /// Start without the embedded default configuration.
    #[arg(long)]
    no_default: bool,
}

fn main() {
    let args = Args::parse();
    let level = match pollux::log::Level::parse(&args.log_level) {
        Ok(level) => level,
        Err(e) => {
            eprintln!("pollux: --log-level: {e}");
            std::process::exit(2);
        }
    };
    let cores = match reactor::parse_core_mask(&args.cpumask) {
        Ok(cores) => cores,
        Err(e) => {
            eprintln!("pollux: --cpumask: {e}");
            std::process::exit(2);
        }
    };
    pollux::log::set_level(level);
    pollux::log::init_stderr();
    // Block SIGINT/SIGTERM before the reactor threads exist, so they inherit the mask.
    let on_signals = AppHandle::shutdown_on_signals();
    let opts = AppOptions {
        cores,
        rpc_socket: args.rpc_socket,
        json_config: args.json,
        wait_for_rpc: args.wait_for_rpc,
        no_default: args.no_default,
        idle: app::idle_strategy(args.poll_only, args.idle_spin_us),
        pin: !args.no_pin,
        log_level: None,
        log_flags: args.logflag,
        extra_init: None,
    };
    let running = match app::start(opts) {
        Ok(running) => running,
        Err(e) => {
            eprintln!("pollux: {e}");
            std::process::exit(1);
        }
    };
    on_signals(running.handle());
    running.wait();
    tracing::info!("pollux stopped");
    std::process::exit(0);
}
