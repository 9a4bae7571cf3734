//! Logging control in SPDK's vocabulary.
//!
//! pollux logs with `tracing`; this module keeps the process-wide print level (ERROR, WARNING,
//! NOTICE, INFO, DEBUG) and the per-module debug flags (`-L bdev`, `log_set_flag`), each flag
//! turning on debug output for one tracing target (`pollux::<flag>` unless its module says
//! otherwise).
//!
//! Whenever they change it rebuilds the filter and hands it to the installed subscriber (the
//! binary installs a reloadable stderr subscriber with `init_stderr`; without one the state is
//! still kept, so the RPCs behave the same in tests). This is control-plane state behind a
//! mutex, never touched on the data path.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// SPDK's log levels, mapped onto tracing's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warning,
    Notice,
    Info,
    Debug,
}

impl Level {
    /// Parses SPDK's names (and tracing's `warn`/`trace`), case-insensitively.
    pub fn parse(name: &str) -> Result<Level, String> {
        match name.to_ascii_uppercase().as_str() {
            "ERROR" => Ok(Level::Error),
            "WARNING" | "WARN" => Ok(Level::Warning),
            "NOTICE" => Ok(Level::Notice),
            "INFO" => Ok(Level::Info),
            "DEBUG" | "TRACE" => Ok(Level::Debug),
            _ => Err(format!(
                "unknown log level {name:?} (use ERROR, WARNING, NOTICE, INFO or DEBUG)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warning => "WARNING",
            Level::Notice => "NOTICE",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }

    /// The tracing filter level. NOTICE has no tracing twin: it shows `info!` events, as
    /// pollux logs its notices (listening, started, stopped) at info.
    fn directive(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warn",
            Level::Notice | Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

type Apply = Box<dyn Fn(&str) + Send>;

struct LogState {
    level: Level,
    /// flag name -> (tracing target, enabled)
    flags: BTreeMap<String, (String, bool)>,
    apply: Option<Apply>,
}

/// The flags every build knows; modules add theirs with `register_flag`.
const BUILTIN_FLAGS: &[&str] = &["app", "reactor", "rpc", "log", "sock", "bdev", "nvmf"];

static STATE: Mutex<Option<LogState>> = Mutex::new(None);

fn with_state<R>(f: impl FnOnce(&mut LogState) -> R) -> R {
    let mut guard = STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let state = guard.get_or_insert_with(|| LogState {
        level: Level::Notice,
        flags: BUILTIN_FLAGS
            .iter()
            .map(|f| (f.to_string(), (format!("pollux::{f}"), false)))
            .collect(),
        apply: None,
    });
    f(state)
}

fn directives(state: &LogState) -> String {
    let mut filter = state.level.directive().to_string();
    for (target, on) in state.flags.values() {
        if *on {
            filter.push(',');
            filter.push_str(target);
            filter.push_str("=debug");
        }
    }
    filter
}

fn reapply(state: &LogState) {
    if let Some(apply) = &state.apply {
        apply(&directives(state));
    }
}

/// The tracing filter the current level and flags amount to.
pub fn filter_directives() -> String {
    with_state(|s| directives(s))
}

/// Declares a debug flag whose tracing target is `target` (e.g. `nvmf_tcp` ->
/// `pollux::nvmf::tcp`). Registering an existing flag again keeps its state.
pub fn register_flag(name: &str, target: &str) {
    with_state(|s| {
        s.flags
            .entry(name.to_string())
            .or_insert_with(|| (target.to_string(), false));
    })
}

pub fn set_level(level: Level) {
    with_state(|s| {
        s.level = level;
        reapply(s);
    })
}

pub fn level() -> Level {
    with_state(|s| s.level)
}

/// Turns a flag on or off; `all` means every flag.
pub fn set_flag(name: &str, enabled: bool) -> Result<(), String> {
    with_state(|s| {
        if name == "all" {
            s.flags.values_mut().for_each(|(_, on)| *on = enabled);
        } else {
            match s.flags.get_mut(name) {
                Some((_, on)) => *on = enabled,
                None => {
                    let known: Vec<&str> = s.flags.keys().map(String::as_str).collect();
                    return Err(format!(
                        "unknown log flag {name:?} (known: all, {})",
                        known.join(", ")
                    ));
                }
            }
        }
        reapply(s);
        Ok(())
    })
}

/// Every flag and whether it is on.
pub fn flags() -> BTreeMap<String, bool> {
    with_state(|s| {
        s.flags
            .iter()
            .map(|(k, (_, on))| (k.clone(), *on))
            .collect()
    })
}

/// Installs what applies a new filter (the binary's reloadable subscriber), and applies the
/// current one at once.
pub fn set_apply(apply: impl Fn(&str) + Send + 'static) {
    with_state(|s| {
        s.apply = Some(Box::new(apply));
        reapply(s);
    })
}

/// Whether log lines start with a timestamp (`log_enable_timestamps`; on by default).
static TIMESTAMPS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns the timestamp at the start of each log line on or off.
pub fn set_timestamps(enabled: bool) {
    TIMESTAMPS.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

/// Whether log lines carry timestamps.
pub fn timestamps() -> bool {
    TIMESTAMPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The system-time timer of the stderr subscriber, silent while timestamps are off.
struct SwitchableTime;

impl tracing_subscriber::fmt::time::FormatTime for SwitchableTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        if timestamps() {
            tracing_subscriber::fmt::time::SystemTime.format_time(w)
        } else {
            Ok(())
        }
    }
}

/// Installs a stderr subscriber whose filter follows `set_level`/`set_flag` at run time.
/// Call once, early in `main`.
pub fn init_stderr() {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{fmt, reload, EnvFilter};
    let initial = EnvFilter::new(filter_directives());
    let (filter, handle) = reload::Layer::new(initial);
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_timer(SwitchableTime)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(true),
        )
        .try_init();
    if installed.is_ok() {
        set_apply(move |directives| {
            let _ = handle.reload(EnvFilter::new(directives));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_flags_build_the_filter() {
        assert_eq!(Level::parse("warning").unwrap(), Level::Warning);
        assert_eq!(Level::parse("DEBUG").unwrap().name(), "DEBUG");
        assert!(Level::parse("loud").is_err());
        register_flag("unit_test_flag", "pollux::unit::test");
        set_flag("unit_test_flag", true).unwrap();
        assert!(filter_directives().contains("pollux::unit::test=debug"));
        assert!(flags()["unit_test_flag"]);
        set_flag("unit_test_flag", false).unwrap();
        assert!(!filter_directives().contains("pollux::unit::test"));
        let err = set_flag("no_such_flag", true).unwrap_err();
        assert!(err.contains("no_such_flag"), "{err}");
    }
}
