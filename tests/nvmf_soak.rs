//! Data-integrity soak of the NVMe-oF/TCP target (ignored by default; run by
//! `scripts/soak.sh`): a verify workload over a 128 MiB namespace through a real TCP
//! connection, in sessions that end in random disconnects — half of them abrupt, with
//! writes and reads in flight (some with a reset instead of a FIN) — followed by a
//! reconnect. Every 128 KiB chunk carries a pattern derived from (chunk, generation); each
//! read is compared with what the last acknowledged write put there. A write that was in
//! flight at an abrupt disconnect may or may not have landed: the next session reads the
//! chunk and accepts exactly the old or the new generation (anything else, e.g. a torn
//! mix, is a mismatch). The run lasts POLLUX_SOAK_SECS (default 120) and at least until
//! POLLUX_SOAK_MIN_BYTES (default 1 GiB) were verified, ends with a full read-back of every
//! chunk, and fails on any mismatch or failed command. It prints one `soak:` summary line
//! (JSON) with the figures. POLLUX_SOAK_SEED replays a run.

mod common;

use common::nvme::{call, export, reset_on_close, rw, Host};
use pollux::nvmf::pdu::PduHeader;
use pollux::nvmf::wire::{io_opc, SglDescriptor};
use pollux::reactor::IdleStrategy;
use serde_json::json;
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.pollux:soak";
const NS_MIB: u64 = 128;
const BLOCK: usize = 4096;
const CHUNK: usize = 128 * 1024;
const CHUNKS: usize = (NS_MIB as usize * 1024 * 1024) / CHUNK;

/// xorshift64*: the run's only source of randomness (seeded, so a run replays).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The contents of `chunk` at generation `gen` (generation 0: never written, zeroes).
fn contents(chunk: usize, gen: u64, out: &mut [u8]) {
    if gen == 0 {
        out.fill(0);
        return;
    }
    for (i, w) in out.chunks_exact_mut(8).enumerate() {
        let mut z = (chunk as u64) << 40 ^ gen << 20 ^ i as u64;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        w.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
}

#[derive(Default)]
struct Figures {
    sessions: u64,
    abrupt: u64,
    resets: u64,
    writes: u64,
    bytes_written: u64,
    reads: u64,
    bytes_verified: u64,
    in_flight_at_disconnect: u64,
    uncertain_old: u64,
    uncertain_new: u64,
    mismatches: u64,
}

struct Soak {
    port: u16,
    rng: Rng,
    gen: Vec<u64>,
    /// Chunks whose last write was in flight at an abrupt disconnect: (old, new) generation.
    uncertain: Vec<Option<(u64, u64)>>,
    next_gen: u64,
    f: Figures,
    expect: Vec<u8>,
    wbuf: Vec<u8>,
}

impl Soak {
    fn chunk_cmd(op: u8, chunk: usize) -> pollux::nvmf::wire::Sqe {
        let blocks = (CHUNK / BLOCK) as u32;
        rw(op, chunk as u64 * blocks as u64, blocks)
    }

    /// Reads `chunk` and checks it (resolving an uncertain chunk to old or new).
    fn verify(&mut self, io: &mut Host, chunk: usize) {
        let d = io.run(Self::chunk_cmd(io_opc::READ, chunk), None, CHUNK as u32);
        assert!(d.ok(), "read of chunk {chunk} failed: {:?}", d.cqe.status());
        assert_eq!(d.data.len(), CHUNK);
        self.f.reads += 1;
        self.f.bytes_verified += CHUNK as u64;
        let candidates: Vec<u64> = match self.uncertain[chunk].take() {
            Some((old, new)) => vec![new, old],
            None => vec![self.gen[chunk]],
        };
        for (i, g) in candidates.iter().enumerate() {
            contents(chunk, *g, &mut self.expect);
            if d.data == self.expect {
                if candidates.len() == 2 {
                    if i == 0 {
                        self.f.uncertain_new += 1;
                    } else {
                        self.f.uncertain_old += 1;
                    }
                }
                self.gen[chunk] = *g;
                return;
            }
        }
        self.f.mismatches += 1;
        let first = d
            .data
            .iter()
            .zip(self.expect.iter())
            .position(|(a, b)| a != b);
        panic!(
            "MISMATCH in chunk {chunk} (generations {candidates:?}), first differing byte {first:?}"
        );
    }

    /// Writes `chunks` (all submitted before any completion is awaited) at a new generation.
    fn write_batch(&mut self, io: &mut Host, chunks: &[usize]) -> Vec<(u16, usize, u64)> {
        let mut cids = Vec::with_capacity(chunks.len());
        for &c in chunks {
            let g = self.next_gen;
            self.next_gen += 1;
            contents(c, g, &mut self.wbuf);
            let cid = io.submit(Self::chunk_cmd(io_opc::WRITE, c), Some(&self.wbuf), 0);
            cids.push((cid, c, g));
        }
        cids
    }

    fn distinct_chunks(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = Vec::with_capacity(n);
        while v.len() < n {
            let c = self.rng.below(CHUNKS as u64) as usize;
            if !v.contains(&c) {
                v.push(c);
            }
        }
        v
    }

    fn session(&mut self) {
        self.f.sessions += 1;
        let admin = Host::admin_connect(self.port, NQN, false, 0);
        let mut io = Host::io_connect(self.port, NQN, admin.cntlid, 1, false);
        // First settle what the last abrupt disconnect left uncertain.
        for c in 0..CHUNKS {
            if self.uncertain[c].is_some() {
                self.verify(&mut io, c);
            }
        }
        let ops = 20 + self.rng.below(200);
        for _ in 0..ops {
            if self.rng.below(10) < 4 {
                let n = 1 + self.rng.below(8) as usize;
                let chunks = self.distinct_chunks(n);
                for (cid, c, g) in self.write_batch(&mut io, &chunks) {
                    let d = io.wait_completion(cid);
                    assert!(d.ok(), "write of chunk {c} failed: {:?}", d.cqe.status());
                    self.gen[c] = g;
                    self.f.writes += 1;
                    self.f.bytes_written += CHUNK as u64;
                }
            } else {
                let c = self.rng.below(CHUNKS as u64) as usize;
                self.verify(&mut io, c);
            }
        }
        if self.rng.below(2) == 0 {
            // Abrupt: writes (data sent, completion not awaited) and a read in flight.
            self.f.abrupt += 1;
            let n = 1 + self.rng.below(6) as usize;
            let chunks = self.distinct_chunks(n);
            for (_, c, g) in self.write_batch(&mut io, &chunks) {
                self.uncertain[c] = Some((self.gen[c], g));
                self.f.in_flight_at_disconnect += 1;
            }
            // A write whose capsule went out but whose data never will (R2T unanswered).
            if self.rng.below(2) == 0 {
                let c = loop {
                    let c = self.rng.below(CHUNKS as u64) as usize;
                    if !chunks.contains(&c) {
                        break c;
                    }
                };
                let mut sqe = Self::chunk_cmd(io_opc::WRITE, c);
                sqe.cid = 0xfff0.into();
                sqe.dptr = SglDescriptor::transport_data_block(CHUNK as u32);
                io.send_pdu(&PduHeader::CapsuleCmd(sqe), &[]);
                self.uncertain[c] = Some((self.gen[c], self.next_gen));
                self.next_gen += 1;
                self.f.in_flight_at_disconnect += 1;
            }
            let c = self.rng.below(CHUNKS as u64) as usize;
            io.submit(Self::chunk_cmd(io_opc::READ, c), None, CHUNK as u32);
            self.f.in_flight_at_disconnect += 1;
            if self.rng.below(2) == 0 {
                self.f.resets += 1;
                reset_on_close(&io.stream);
                reset_on_close(&admin.stream);
            }
        }
        if self.rng.below(2) == 0 {
            drop((io, admin));
        } else {
            drop((admin, io));
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "soak: run by scripts/soak.sh"]
fn soak_verify_with_random_disconnects() {
    let secs = env_u64("POLLUX_SOAK_SECS", 120);
    let min_bytes = env_u64("POLLUX_SOAK_MIN_BYTES", 1 << 30);
    let seed = env_u64(
        "POLLUX_SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    ) | 1;
    eprintln!("soak seed {seed} (POLLUX_SOAK_SEED replays it)");
    let mut o = common::test_options("soak");
    o.idle = IdleStrategy::SpinThenSleep(Duration::from_micros(50));
    let app = common::start(o);
    if std::env::var_os("SOAK_DEBUG_LOG").is_some() {
        pollux::log::init_stderr();
        let _ = call(&app, "log_set_print_level", json!({"level": "DEBUG"}));
    }
    let port = export(
        &mut |m, p| call(&app, m, p),
        NQN,
        "Malloc0",
        NS_MIB,
        json!({}),
        true,
    );
    let mut soak = Soak {
        port,
        rng: Rng(seed),
        gen: vec![0; CHUNKS],
        uncertain: vec![None; CHUNKS],
        next_gen: 1,
        f: Figures::default(),
        expect: vec![0; CHUNK],
        wbuf: vec![0; CHUNK],
    };
    let t0 = Instant::now();
    let hard_stop = Duration::from_secs(secs * 3 + 60);
    while t0.elapsed() < Duration::from_secs(secs) || soak.f.bytes_verified < min_bytes {
        assert!(
            t0.elapsed() < hard_stop,
            "only {} bytes verified in {:?}",
            soak.f.bytes_verified,
            t0.elapsed()
        );
        soak.session();
    }
    // Final pass: every chunk read back once more.
    let admin = Host::admin_connect(port, NQN, false, 0);
    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);
    for c in 0..CHUNKS {
        soak.verify(&mut io, c);
    }
    drop((io, admin));
    let f = &soak.f;
    let elapsed = t0.elapsed();
    let stats = call(&app, "nvmf_get_stats", json!({})).unwrap();
    println!(
        "soak: {}",
        json!({
            "seed": seed,
            "seconds": elapsed.as_secs_f64(),
            "namespace_mib": NS_MIB,
            "sessions": f.sessions,
            "abrupt_disconnects": f.abrupt,
            "reset_disconnects": f.resets,
            "commands_in_flight_at_disconnect": f.in_flight_at_disconnect,
            "writes": f.writes,
            "bytes_written": f.bytes_written,
            "reads_verified": f.reads,
            "bytes_verified": f.bytes_verified,
            "uncertain_writes_landed": f.uncertain_new,
            "uncertain_writes_not_landed": f.uncertain_old,
            "mismatches": f.mismatches,
            "target_connections": stats["poll_groups"][0]["transports"][0]["connections"],
        })
    );
    assert_eq!(f.mismatches, 0);
    assert!(f.bytes_verified >= min_bytes);
    app.shutdown_and_wait();
}
