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
    /// Serve Prometheus metrics over HTTP at ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    spdk: SpdkAppFlags,
}

/// SPDK application flags that tools written for SPDK pass. `--main-core`,
/// `--interrupt-mode` and `--silence-noticelog` act; the others mean nothing to pollux (no
/// DPDK environment: no PCI devices, hugepages, shared memory, core lock files or
/// tracepoints) and are accepted and named once on stderr as without effect.
#[derive(clap::Args, Debug, Default)]
#[command(next_help_heading = "SPDK application flags")]
struct SpdkAppFlags {
    /// The main reactor's core (must be in the mask).
    #[arg(short = 'p', long = "main-core", value_name = "CORE")]
    main_core: Option<u32>,
    /// Sleep when idle (pollux's default idle strategy; refused with --poll-only).
    #[arg(long)]
    interrupt_mode: bool,
    /// Log at WARNING and above only.
    #[arg(long)]
    silence_noticelog: bool,
    /// No effect: pollux uses no PCI devices.
    #[arg(short = 'u', long = "no-pci")]
    no_pci: bool,
    /// No effect: pollux needs no hugepages.
    #[arg(long)]
    no_huge: bool,
    /// No effect: pollux allocates memory as needed (SPDK: DPDK memory in MB).
    #[arg(short = 's', long = "mem-size", value_name = "MB")]
    mem_size: Option<String>,
    /// No effect: pollux shares no memory between processes.
    #[arg(
        short = 'i',
        long = "shm-id",
        value_name = "ID",
        allow_hyphen_values = true
    )]
    shm_id: Option<i64>,
    /// No effect: pollux keeps no per-core lock files.
    #[arg(long)]
    disable_cpumask_locks: bool,
    /// No effect: DPDK memory channels.
    #[arg(short = 'n', long = "mem-channels", value_name = "N")]
    mem_channels: Option<u32>,
    /// No effect: hugetlbfs mount.
    #[arg(long, value_name = "DIR")]
    huge_dir: Option<PathBuf>,
    /// No effect: unlink hugepage files.
    #[arg(short = 'R', long = "huge-unlink")]
    huge_unlink: bool,
    /// No effect: single-file hugepage segments.
    #[arg(short = 'g', long = "single-file-segments")]
    single_file_segments: bool,
    /// No effect: DPDK IOVA mode.
    #[arg(long, value_name = "pa|va")]
    iova_mode: Option<String>,
    /// No effect: DPDK base virtual address.
    #[arg(long, value_name = "ADDR")]
    base_virtaddr: Option<String>,
    /// No effect: tracepoint group mask (pollux traces with -L and --log-level).
    #[arg(short = 'e', long = "tpoint-group", value_name = "MASK")]
    tpoint_group: Option<String>,
    /// No effect: trace buffer entries.
    #[arg(long, value_name = "N")]
    num_trace_entries: Option<u64>,
    /// No effect: core dump size limit.
    #[arg(short = 'd', long = "limit-coredump")]
    limit_coredump: bool,
}

impl SpdkAppFlags {
    /// The flags given that have no effect, as the user spelled them.
    fn without_effect(&self) -> Vec<&'static str> {
        [
            (self.no_pci, "--no-pci"),
            (self.no_huge, "--no-huge"),
            (self.mem_size.is_some(), "--mem-size"),
            (self.shm_id.is_some(), "--shm-id"),
            (self.disable_cpumask_locks, "--disable-cpumask-locks"),
            (self.mem_channels.is_some(), "--mem-channels"),
            (self.huge_dir.is_some(), "--huge-dir"),
            (self.huge_unlink, "--huge-unlink"),
            (self.single_file_segments, "--single-file-segments"),
            (self.iova_mode.is_some(), "--iova-mode"),
            (self.base_virtaddr.is_some(), "--base-virtaddr"),
            (self.tpoint_group.is_some(), "--tpoint-group"),
            (self.num_trace_entries.is_some(), "--num-trace-entries"),
            (self.limit_coredump, "--limit-coredump"),
        ]
        .into_iter()
        .filter_map(|(given, name)| given.then_some(name))
        .collect()
    }
}

/// Puts `main` first in `cores` (SPDK's `--main-core`).
fn with_main_core(mut cores: Vec<u32>, main: Option<u32>) -> Result<Vec<u32>, String> {
    if let Some(m) = main {
        let at = cores
            .iter()
            .position(|c| *c == m)
            .ok_or_else(|| format!("--main-core: core {m} is not in the core mask {cores:?}"))?;
        let core = cores.remove(at);
        cores.insert(0, core);
    }
    Ok(cores)
}

fn main() {
    let args = Args::parse();
    let level = match pollux::log::Level::parse(&args.log_level) {
        Ok(level) if args.spdk.silence_noticelog => level.min(pollux::log::Level::Warning),
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
    let cores = match with_main_core(cores, args.spdk.main_core) {
        Ok(cores) => cores,
        Err(e) => {
            eprintln!("pollux: {e}");
            std::process::exit(2);
        }
    };
    if args.spdk.interrupt_mode && args.poll_only {
        eprintln!("pollux: --interrupt-mode and --poll-only contradict each other");
        std::process::exit(2);
    }
    let ignored = args.spdk.without_effect();
    if !ignored.is_empty() {
        eprintln!(
            "pollux: SPDK flags accepted without effect (no DPDK environment in pollux): {}",
            ignored.join(" ")
        );
    }
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
    // Before readiness: a service that says it is ready serves everything it was asked to.
    let metrics = match args.metrics_addr {
        Some(addr) => match pollux::metrics::start(addr, running.handle().clone()) {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("pollux: --metrics-addr {addr}: {e}");
                running.shutdown_and_wait();
                std::process::exit(1);
            }
        },
        None => None,
    };
    // The RPC socket listens and the initial configuration (listeners included) is applied.
    pollux::service::notify_ready(&format!(
        "serving RPC at {}",
        running.rpc_socket().display()
    ));
    pollux::service::notify_stopping_on_shutdown(running.handle());
    running.wait();
    drop(metrics);
    tracing::info!("pollux stopped");
    std::process::exit(0);
}
