//! Application start-up, shared by the `pollux` binary and the integration tests.
//!
//! It starts the reactors, registers the framework's and every module's RPC methods on the main
//! reactor, opens the RPC socket, then either waits in the STARTUP state (`--wait-for-rpc`),
//! loads a JSON config in SPDK's two passes (`--json`), or initializes and applies the embedded
//! default configuration.
//!
//! `start` returns once the socket listens and the initial configuration is applied; the
//! returned `RunningApp` shuts the application down and waits for it (it also does so when
//! dropped, so a failing test never leaks reactors).

use crate::reactor::{self, AppHandle, IdleStrategy, ReactorConfig};
use crate::rpc::{self, config, framework, server, RpcState};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The RPC socket path SPDK users expect (pollux's name in it).
pub const DEFAULT_RPC_SOCKET: &str = "/var/tmp/pollux.sock";

/// Everything `start` needs; the binary fills it from its flags.
pub struct AppOptions {
    /// Reactor cores; the first is the main reactor.
    pub cores: Vec<u32>,
    pub rpc_socket: PathBuf,
    /// `--json FILE`: an SPDK-format config applied at start-up.
    pub json_config: Option<PathBuf>,
    /// Stay in the STARTUP state until `framework_start_init`.
    pub wait_for_rpc: bool,
    /// Do not apply the embedded default configuration.
    pub no_default: bool,
    pub idle: IdleStrategy,
    /// Pin reactor threads to their cores.
    pub pin: bool,
    /// SPDK log level name (ERROR, WARNING, NOTICE, INFO, DEBUG).
    pub log_level: Option<String>,
    /// Debug log flags to turn on (`-L`).
    pub log_flags: Vec<String>,
    /// Runs on the main reactor after the modules registered (tests, embedders).
    pub extra_init: Option<Box<dyn FnOnce() + Send>>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            cores: vec![0],
            rpc_socket: PathBuf::from(DEFAULT_RPC_SOCKET),
            json_config: None,
            wait_for_rpc: false,
            no_default: false,
            idle: IdleStrategy::default(),
            pin: true,
            log_level: None,
            log_flags: Vec::new(),
            extra_init: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Options(String),
    #[error("cannot start reactors: {0}")]
    Reactor(#[from] reactor::ReactorError),
    #[error("{0}")]
    Rpc(#[from] server::ServerError),
    #[error("{0}")]
    Config(String),
    #[error("start-up failed: {0}")]
    Startup(String),
}

/// A started application.
pub struct RunningApp {
    handle: AppHandle,
    rpc_socket: PathBuf,
}

impl RunningApp {
    pub fn handle(&self) -> &AppHandle {
        &self.handle
    }

    pub fn rpc_socket(&self) -> &Path {
        &self.rpc_socket
    }

    /// Calls an RPC method in-process on the main reactor and waits up to `timeout` for
    /// its answer (benches, tests); `None` when the reactors have stopped or no answer came.
    pub fn call(
        &self,
        method: &str,
        params: serde_json::Value,
        timeout: Duration,
    ) -> Option<rpc::RpcResult> {
        let (tx, rx) = std::sync::mpsc::channel();
        let m = method.to_string();
        let deliver = rpc::Responder::new(move |r| {
            let _ = tx.send(r);
        });
        self.handle
            .send_to(self.handle.main_core(), move || {
                rpc::call(&m, Some(params), deliver)
            })
            .ok()?;
        rx.recv_timeout(timeout).ok()
    }

    /// Starts an orderly shutdown (as SIGTERM does); returns at once.
    pub fn shutdown(&self) {
        self.handle.shutdown();
    }

    /// Waits until the application has stopped (by `shutdown`, a signal or an RPC).
    pub fn wait(&self) {
        self.handle.wait();
    }

    pub fn shutdown_and_wait(self) {
        self.shutdown();
        self.wait();
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        self.handle.shutdown();
        self.handle.wait();
    }
}

/// Calls every module's registration (RPC methods, subsystems, log flags) on the main
/// reactor, in dependency order. Each module adds ONE line below, e.g.
/// `crate::sock::rpc::register();`.
pub fn register_modules() {
    // ---- module registrations: one line per module, dependencies first ----
    crate::rpc::iobuf::register();
    crate::keyring::rpc::register();
    crate::sock::rpc::register();
    crate::bdev::rpc::register();
    crate::nvmf::rpc::register();
    // ---- end of module registrations ----
}

/// The embedded default configuration, applied when neither `--json`, `--wait-for-rpc` nor
/// `--no-default` is given. Runs on the main reactor in the RUNTIME state.
pub fn default_config() {
    crate::nvmf::rpc::default_config();
}

/// What the main reactor reports back to `start`.
type StartResult = Result<(), AppError>;

/// Starts the application; returns once the RPC socket listens and the initial
/// configuration is applied (or the STARTUP state is reached with `wait_for_rpc`).
pub fn start(mut opts: AppOptions) -> Result<RunningApp, AppError> {
    let level = opts
        .log_level
        .as_deref()
        .map(crate::log::Level::parse)
        .transpose()
        .map_err(AppError::Options)?;
    if let Some(level) = level {
        crate::log::set_level(level);
    }
    let entries = match &opts.json_config {
        Some(path) => Some(config::read_file(path).map_err(AppError::Config)?),
        None => None,
    };
    let (tx, rx) = std::sync::mpsc::channel::<StartResult>();
    let socket = opts.rpc_socket.clone();
    let wait_for_rpc = opts.wait_for_rpc;
    let no_default = opts.no_default;
    let flags = std::mem::take(&mut opts.log_flags);
    let extra_init = opts.extra_init.take();
    let init = move || {
        let report = move |r: StartResult| {
            let failed = r.is_err();
            let _ = tx.send(r);
            if failed {
                reactor::request_shutdown();
            }
        };
        framework::register();
        register_modules();
        if let Some(f) = extra_init {
            f();
        }
        for flag in &flags {
            if let Err(e) = crate::log::set_flag(flag, true) {
                return report(Err(AppError::Options(e)));
            }
        }
        rpc::set_state(RpcState::Startup);
        if let Err(e) = server::listen(&socket) {
            return report(Err(e.into()));
        }
        match entries {
            Some(entries) => {
                let count = entries.len();
                config::apply(entries, !wait_for_rpc, move |r| {
                    if r.is_ok() {
                        tracing::info!(entries = count, "JSON config applied");
                    }
                    report(r.map_err(AppError::Config))
                })
            }
            None if wait_for_rpc => {
                tracing::info!("waiting for framework_start_init (STARTUP state)");
                report(Ok(()))
            }
            None => {
                framework::start_init();
                if no_default {
                    tracing::info!("--no-default: starting without the default configuration");
                } else {
                    default_config();
                }
                report(Ok(()))
            }
        }
    };
    let handle = reactor::start(
        ReactorConfig {
            cores: opts.cores.clone(),
            idle: opts.idle,
            pin: opts.pin,
        },
        init,
    )?;
    let app = RunningApp {
        handle,
        rpc_socket: opts.rpc_socket.clone(),
    };
    match rx.recv() {
        Ok(Ok(())) => {
            tracing::info!(cores = ?opts.cores, socket = %opts.rpc_socket.display(), "pollux started");
            Ok(app)
        }
        Ok(Err(e)) => {
            app.shutdown();
            app.wait();
            Err(e)
        }
        Err(_) => Err(AppError::Startup(
            "the main reactor stopped before start-up completed".into(),
        )),
    }
}

/// The idle strategy for a spin time in microseconds (`None` or poll-only: never sleep).
pub fn idle_strategy(poll_only: bool, spin_us: u64) -> IdleStrategy {
    if poll_only {
        IdleStrategy::PollOnly
    } else {
        IdleStrategy::SpinThenSleep(Duration::from_micros(spin_us))
    }
}
