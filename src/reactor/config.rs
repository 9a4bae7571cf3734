//! How reactors are configured: the core mask (SPDK's syntax), the idle strategy, pinning,
//! and the errors of starting them.

use std::time::Duration;

/// When a reactor with nothing to do may sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStrategy {
    /// Never sleep: poll continuously (`--poll-only`).
    PollOnly,
    /// Spin for this long after the last busy poll, then sleep until woken.
    SpinThenSleep(Duration),
}

impl Default for IdleStrategy {
    fn default() -> Self {
        IdleStrategy::SpinThenSleep(Duration::from_micros(200))
    }
}

#[derive(Debug, Clone)]
pub struct ReactorConfig {
    /// CPU cores, one reactor each; the first one is the main reactor.
    pub cores: Vec<u32>,
    pub idle: IdleStrategy,
    /// Pin each reactor thread to its core (tests sharing a small machine may turn it off).
    pub pin: bool,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        Self {
            cores: vec![0],
            idle: IdleStrategy::default(),
            pin: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReactorError {
    #[error("the core mask is empty")]
    EmptyMask,
    #[error("core {core} appears twice in the core mask")]
    DuplicateCore { core: u32 },
    #[error("core {core} is not available to this process (available cores: {available:?})")]
    CoreUnavailable { core: u32, available: Vec<u32> },
    #[error("could not pin reactor thread to core {core}")]
    PinFailed { core: u32 },
    #[error("reactor setup failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses an SPDK-style core mask: hex (`0x3`, `3`) or a list (`[0,1]`, `[0-3,6]`).
pub fn parse_core_mask(mask: &str) -> Result<Vec<u32>, String> {
    let mask = mask.trim();
    let mut cores = Vec::new();
    if let Some(list) = mask.strip_prefix('[') {
        let list = list
            .strip_suffix(']')
            .ok_or_else(|| format!("core list {mask:?} lacks its closing ']'"))?;
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let parse = |s: &str| {
                s.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("{s:?} in core list {mask:?} is not a core number"))
            };
            match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (parse(lo)?, parse(hi)?);
                    if lo > hi || hi - lo > 1024 {
                        return Err(format!("bad core range {part:?}"));
                    }
                    cores.extend(lo..=hi);
                }
                None => cores.push(parse(part)?),
            }
        }
    } else {
        let hex = mask
            .strip_prefix("0x")
            .or_else(|| mask.strip_prefix("0X"))
            .unwrap_or(mask);
        if hex.is_empty() || hex.len() > 32 {
            return Err(format!("{mask:?} is not a hex core mask"));
        }
        let bits = u128::from_str_radix(hex, 16)
            .map_err(|_| format!("{mask:?} is not a hex core mask"))?;
        cores.extend((0..128).filter(|bit| bits & (1u128 << bit) != 0));
    }
    if cores.is_empty() {
        return Err(format!("core mask {mask:?} selects no core"));
    }
    let mut seen = std::collections::HashSet::new();
    for core in &cores {
        if !seen.insert(*core) {
            return Err(format!("core {core} appears twice in {mask:?}"));
        }
    }
    Ok(cores)
}
