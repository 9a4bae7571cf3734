//! The harnesses behind pollux's fuzz targets. Each target binary in `src/bin/` is one line
//! that hands libFuzzer's input to a `check` function here; the checks decode the input
//! with the real code and assert properties that must hold for ANY input (no panic, same
//! answer however the bytes are split, round trips, errors that are answers). A new target
//! is one more file in `src/bin/` (cargo discovers it) plus, optionally, a module here and
//! seeds in `seeds/<target>/`.

pub mod auth;
pub mod capsule_dispatch;
pub mod pdu;
pub mod rpc_framing;
pub mod rpc_params;
pub mod tls;

use pollux::app::{self, AppOptions, RunningApp};
use pollux::reactor::IdleStrategy;
use std::time::Duration;

/// Starts the in-process application a harness drives for the whole run: one unpinned
/// reactor that sleeps when idle, no default config, every module registered as `pollux`
/// registers them, its RPC socket in the temp dir named after `label` and the process.
pub fn start_app(label: &str) -> RunningApp {
    let socket = std::env::temp_dir().join(format!("{label}-{}.sock", std::process::id()));
    app::start(AppOptions {
        cores: vec![0],
        rpc_socket: socket,
        pin: false,
        idle: IdleStrategy::SpinThenSleep(Duration::from_micros(50)),
        no_default: true,
        ..Default::default()
    })
    .expect("start the harness application")
}

/// Split sizes drawn from a seed taken from the input itself, so a crash replays exactly:
/// a small xorshift generator yielding chunk lengths in `1..=max`.
pub struct Splits {
    state: u32,
    max: usize,
}

impl Splits {
    /// `seed` may be anything (zero is remapped); `max` is at least 1.
    pub fn new(seed: u32, max: usize) -> Self {
        Self {
            state: seed | 1,
            max: max.max(1),
        }
    }

    /// The next chunk length, `1..=max`.
    pub fn next_len(&mut self) -> usize {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        1 + (x as usize % self.max)
    }

    /// Cuts `bytes` into consecutive chunks of the generated lengths.
    pub fn chunks<'a>(&mut self, mut bytes: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let n = self.next_len().min(bytes.len());
            out.push(&bytes[..n]);
            bytes = &bytes[n..];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Splits;

    #[test]
    fn splits_cover_the_input_in_order() {
        let data: Vec<u8> = (0..=255).collect();
        for seed in [0, 1, 7, 0xdead_beef] {
            let chunks = Splits::new(seed, 17).chunks(&data);
            assert!(chunks.iter().all(|c| (1..=17).contains(&c.len())));
            assert_eq!(chunks.concat(), data);
        }
    }
}
