//! The command-dispatcher harness: decoded capsules (admin, fabrics and I/O SQEs with
//! arbitrary fields, in-capsule data, arbitrary transfer lengths) driven through the
//! target's socket-free entry points — `FabricsCommand::parse` + `Ctrlr::property_get/set`
//! and `ConnectData::decode_slice` (the fabrics layer), `Ctrlr::admin` + `fill_smart` (the
//! admin command set) and `io::plan` (I/O commands to bdev work) — against one controller
//! whose state carries over from command to command within an input. The subsystem holds
//! real malloc bdevs of two block sizes (created once in an in-process single-reactor
//! application; the harness only reads their properties). Properties checked for ANY
//! input: no panic; an admin answer never claims more data than the buffer it was given;
//! a failed plan is never SUCCESS; a planned read/write/write-zeroes/unmap lies inside the
//! namespace, moves exactly blocks × block size bytes, no more than the transfer length or
//! the transport's max I/O size (compares too); each I/O record with the one before it as
//! a fused Compare and Write pair (`io::plan_fused`) is either refused with two non-SUCCESS
//! statuses or one in-range compare-and-write within both transfer lengths; the
//! controller's bounded lists (AERs, error log, changed namespaces, reservation
//! notifications) stay bounded. Reservation commands (I/O records
//! with opcodes 0x0D/0x0E/0x11/0x15) are decoded and applied to one namespace state that
//! carries over within an input, from one of three hosts (CDW2 mod 3; CDW3 bit 0: the
//! namespace has a PTPL file): a refused command changes nothing, a command never notifies
//! its own host, a held reservation always has a holder among at most three registrants,
//! and a Report is exactly as long as asked and within the transfer length.
//!
//! Input layout: byte 0 configures (bit 0 discovery controller, bit 1 start enabled, bits
//! 2-3 the namespaces' capabilities, bit 4 ANA reporting with the controller's listener in
//! the state of bits 5-7, group 2 inaccessible; the view always holds one discovery
//! referral); then records of `kind u8, sqe [64], buf_len u16 LE,
//! data_len u16 LE, data` until the input runs out.

use pollux::app::RunningApp;
use pollux::bdev::iostat::IoStats;
use pollux::bdev::{self, BdevHandle};
use pollux::nvmf::ana::{self, AnaState};
use pollux::nvmf::io::{self, IoPlan, NsGeometry};
use pollux::nvmf::referral::Referral;
use pollux::nvmf::reservation::{Notice, Reservations};
use pollux::nvmf::reservation_wire::{self as resv, MAX_NOTICES};
use pollux::nvmf::subsystem::{ListenAddr, Namespace, SubType, Subsystem};
use pollux::nvmf::target::{TargetView, TransportOpts};
use pollux::nvmf::target_ctrlr::{self as ctrlr, AdminEnv, AdminOutcome, Ctrlr, MAX_AERS};
use pollux::nvmf::wire::{self, prop, ConnectData, FabricsCommand, PropertySetCmd, Sqe};
use pollux::rpc::{self, Responder};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

/// Largest admin / I/O buffer a record asks for (the transport's limit is 1 MiB; 64 KiB
/// covers every admin page and keeps executions fast).
const MAX_BUF: usize = 64 * 1024;
/// Error log entries a controller keeps (target_ctrlr.rs) and its changed-namespace list bound.
const MAX_ERRORS: usize = 64;
const MAX_CHANGED_NS: usize = 1024;
const NQN: &str = "nqn.2016-06.io.pollux:fuzz";

struct Harness {
    _app: RunningApp,
    bdevs: Vec<BdevHandle>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let app = crate::start_app("pollux-fuzz-dispatch");
        // bdev_malloc_create answers asynchronously: wait for both answers, then look
        // the bdevs up on the main reactor.
        let specs = [("FuzzA", 2048u64, 512u32), ("FuzzB", 256, 4096)];
        let (tx, rx) = mpsc::channel();
        for (name, blocks, bs) in specs {
            let tx = tx.clone();
            app.handle()
                .send_to(0, move || {
                    rpc::call(
                        "bdev_malloc_create",
                        Some(json!({"name": name, "num_blocks": blocks, "block_size": bs})),
                        Responder::new(move |r| {
                            let _ = tx.send(r.is_ok());
                        }),
                    )
                })
                .expect("reach the main reactor");
        }
        for _ in specs {
            let created = rx.recv_timeout(Duration::from_secs(10)).expect("an answer");
            assert!(created, "create a malloc bdev");
        }
        let (tx, rx) = mpsc::channel();
        app.handle()
            .send_to(0, move || {
                let handles: Vec<BdevHandle> = specs
                    .iter()
                    .filter_map(|(name, _, _)| bdev::lookup(name))
                    .collect();
                let _ = tx.send(handles);
            })
            .expect("reach the main reactor");
        let bdevs = rx.recv_timeout(Duration::from_secs(10)).expect("the bdevs");
        assert_eq!(bdevs.len(), specs.len(), "both malloc bdevs exist");
        Harness { _app: app, bdevs }
    })
}

/// A little-endian cursor over the input that yields nothing once it runs out.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    /// Up to `n` bytes (fewer when the input ends).
    fn take_up_to(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        self.take(n).unwrap_or(&[])
    }
}

fn geometry(b: &BdevHandle, caps: u8) -> NsGeometry {
    NsGeometry {
        block_size: b.block_size(),
        num_blocks: b.num_blocks(),
        supports_flush: caps & 1 != 0,
        supports_unmap: caps & 2 != 0,
        supports_write_zeroes: caps & 1 == 0,
    }
}

/// The controller's listener (ANA states are per listener).
fn listener() -> ListenAddr {
    ListenAddr::tcp("127.0.0.1", 4420)
}

fn subsystem(bdevs: &[BdevHandle], discovery: bool, ana: Option<u8>) -> Subsystem {
    if discovery {
        return Subsystem::new(1, wire::DISCOVERY_NQN, SubType::Discovery);
    }
    let mut s = Subsystem::new(2, NQN, SubType::Nvme);
    let mut namespaces = BTreeMap::new();
    for (i, b) in bdevs.iter().enumerate() {
        let nsid = i as u32 + 1;
        namespaces.insert(
            nsid,
            Namespace {
                nsid,
                bdev: b.clone(),
                nguid: [nsid as u8; 16],
                eui64: if i == 0 { [0; 8] } else { [9; 8] },
                uuid: [0x40 + nsid as u8; 16],
                size_blocks: b.num_blocks(),
                visible_hosts: None,
                anagrpid: nsid,
                reservations: Default::default(),
                ptpl_file: None,
            },
        );
    }
    s.namespaces = namespaces.into_iter().collect();
    s.max_namespaces = 32;
    if let Some(bits) = ana {
        s.ana_reporting = true;
        let state = AnaState::ALL[bits as usize % AnaState::ALL.len()];
        s.listeners.push(listener());
        s.ana.add_listener(&listener(), state);
        let _ = ana::set_state(&mut s, &listener(), AnaState::Inaccessible, Some(2));
    }
    s
}

/// Runs one fuzz input through the dispatcher's pure layers.
pub fn check(data: &[u8]) {
    let h = harness();
    let mut cur = Cursor(data);
    let Some(config) = cur.u8() else {
        return;
    };
    let opts = TransportOpts::default();
    let ana_bits = (config & 0x10 != 0).then_some(config >> 5);
    let subsys = Arc::new(subsystem(&h.bdevs, config & 1 != 0, ana_bits));
    let mut view = TargetView::build(3, Some(opts.clone()), [subsys.clone()]);
    view.version = 1;
    view.referrals = Arc::new(vec![Referral {
        addr: ListenAddr::tcp("127.0.0.1", 4430),
        subnqn: wire::DISCOVERY_NQN.into(),
        secure_channel: false,
    }]);
    let env = AdminEnv {
        view: &view,
        subsys: &subsys,
        opts: &opts,
    };
    let caps = (config >> 2) & 3;
    let mut c = Ctrlr::new(
        1,
        &subsys,
        "nqn.2014-08.org.nvmexpress:uuid:fuzz",
        [7; 16],
        0,
        &opts,
    );
    c.listen = Some(listener());
    if config & 2 != 0 {
        let (st, _) = c.property_set(&PropertySetCmd {
            cid: 0,
            size8: false,
            offset: prop::CC,
            value: 1 | 6 << 16 | 4 << 20,
        });
        assert!(st.is_success(), "enabling with valid CC values succeeds");
    }
    let mut buf = vec![0u8; MAX_BUF];
    let mut prev_io = None;
    let mut state = Reservations::default();
    while let Some(kind) = cur.u8() {
        let Some(raw) = cur.take(64) else {
            return;
        };
        let sqe = Sqe::decode(raw.try_into().expect("64 bytes"));
        let (Some(buf_len), Some(data_len)) = (cur.u16(), cur.u16()) else {
            return;
        };
        let payload = cur.take_up_to(data_len as usize);
        let out = &mut buf[..(buf_len as usize).min(MAX_BUF)];
        match kind % 4 {
            0 => fabrics(&mut c, &sqe, payload, &opts),
            1 => admin(&mut c, &sqe, out, &env),
            2 if reservation(&mut state, &sqe, buf_len as u32, payload, &opts) => {}
            2 => plan(
                &sqe,
                &h.bdevs,
                &subsys,
                caps,
                buf_len as u32,
                payload,
                &opts,
                &mut prev_io,
            ),
            _ => events(&mut c, &sqe),
        }
        assert!(c.aers.len() <= MAX_AERS, "AERs stay bounded");
        assert!(c.errors.len() <= MAX_ERRORS, "the error log stays bounded");
        assert!(
            c.changed_ns.len() <= MAX_CHANGED_NS + 1,
            "the changed list stays bounded"
        );
        assert!(
            c.resv.len() <= MAX_NOTICES,
            "reservation notices stay bounded"
        );
    }
}

fn fabrics(c: &mut Ctrlr, sqe: &Sqe, payload: &[u8], opts: &TransportOpts) {
    let mut sqe = *sqe;
    sqe.opcode = wire::admin_opc::FABRICS;
    match FabricsCommand::parse(&sqe) {
        Some(FabricsCommand::PropertyGet(p)) => {
            let (st, v) = c.property_get(&p, opts);
            if !st.is_success() {
                assert_eq!(v, 0, "a failed Property Get returns no value");
            } else if !p.size8 {
                assert!(v <= u32::MAX as u64, "a 4-byte property fits 4 bytes");
            }
        }
        Some(FabricsCommand::PropertySet(p)) => {
            let was = c.cc.en();
            let (st, enabled_now) = c.property_set(&p);
            if enabled_now {
                assert!(st.is_success() && !was && c.cc.en());
            }
        }
        Some(FabricsCommand::Connect(_)) => {
            if let Some(d) = ConnectData::decode_slice(payload) {
                let _ = (d.subnqn_str(), d.hostnqn_str());
            } else {
                assert!(payload.len() < 1024, "1024 bytes always decode");
            }
        }
        Some(_) => {}
        None => unreachable!("the opcode is FABRICS"),
    }
}

fn admin(c: &mut Ctrlr, sqe: &Sqe, out: &mut [u8], env: &AdminEnv<'_>) {
    let cap = out.len();
    match c.admin(sqe, out, env) {
        AdminOutcome::Complete {
            status, data_len, ..
        } => {
            assert!(
                data_len <= cap,
                "data_len {data_len} within the {cap}-byte buffer"
            );
            if !status.is_success() {
                assert_eq!(data_len, 0, "a failed admin command sends no data");
            }
        }
        AdminOutcome::KeepAer => {
            assert!(
                c.aers.len() < MAX_AERS,
                "an AER is only kept below the limit"
            );
            c.aers.push_back(sqe.cid.get());
        }
        AdminOutcome::Smart { offset, len } => {
            assert!(len <= cap);
            match ctrlr::fill_smart(&IoStats::default(), offset, len, out) {
                AdminOutcome::Complete { data_len, .. } => assert!(data_len <= cap),
                other => panic!("fill_smart answered {other:?}"),
            }
        }
        AdminOutcome::Abort { .. } => assert!(!c.discovery, "discovery controllers do not abort"),
        AdminOutcome::SetPtpl { nsid, .. } => {
            assert!(!c.discovery);
            assert!(nsid == u32::MAX || env.subsys.namespaces.contains_key(&nsid));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn plan(
    sqe: &Sqe,
    bdevs: &[BdevHandle],
    subsys: &Subsystem,
    caps: u8,
    xfer: u32,
    payload: &[u8],
    opts: &TransportOpts,
    prev: &mut Option<(Sqe, u32)>,
) {
    let geom = subsys
        .namespaces
        .get(&sqe.nsid.get())
        .map(|ns| geometry(&ns.bdev, caps));
    // A transfer length of 0xFFFF selects the SGL's own length (as the transport does).
    let xfer = if xfer == 0xffff {
        sqe.dptr.length.get()
    } else {
        xfer
    };
    let _ = bdevs;
    // The previous I/O record and this one as a fused pair (first, second), as the
    // transport checks adjacent FUSE 01b / 10b commands.
    if let Some((first, first_xfer)) = prev.replace((*sqe, xfer)) {
        match io::plan_fused(
            &first,
            sqe,
            geom.as_ref(),
            (first_xfer, xfer),
            opts.max_io_size,
        ) {
            Err((s1, s2)) => assert!(!s1.is_success() && !s2.is_success()),
            Ok((offset_blocks, num_blocks, len)) => {
                let g = geom.expect("a pair needs a namespace");
                assert!(num_blocks > 0);
                assert!(offset_blocks
                    .checked_add(num_blocks)
                    .is_some_and(|e| e <= g.num_blocks));
                assert_eq!(len as u64, num_blocks * g.block_size as u64);
                assert!(len as u64 <= first_xfer.min(xfer) as u64);
                assert!(len as u64 <= opts.max_io_size as u64);
            }
        }
    }
    match io::plan(sqe, geom.as_ref(), xfer, opts.max_io_size, payload) {
        Err(st) => assert!(!st.is_success(), "a failed plan is not SUCCESS"),
        Ok(p) => {
            let g = geom.expect("a plan needs a namespace");
            let in_range = |off: u64, n: u64| off.checked_add(n).is_some_and(|e| e <= g.num_blocks);
            match p {
                IoPlan::Read {
                    offset_blocks,
                    num_blocks,
                    len,
                }
                | IoPlan::Write {
                    offset_blocks,
                    num_blocks,
                    len,
                }
                | IoPlan::Compare {
                    offset_blocks,
                    num_blocks,
                    len,
                } => {
                    assert!(num_blocks > 0 && in_range(offset_blocks, num_blocks));
                    assert_eq!(len as u64, num_blocks * g.block_size as u64);
                    assert!(len as u64 <= xfer as u64 && len as u64 <= opts.max_io_size as u64);
                }
                IoPlan::WriteZeroes {
                    offset_blocks,
                    num_blocks,
                } => {
                    assert!(g.supports_write_zeroes);
                    assert!(num_blocks > 0 && in_range(offset_blocks, num_blocks));
                }
                IoPlan::Unmap(ranges) => {
                    assert!(g.supports_unmap && !ranges.is_empty() && ranges.len() <= 256);
                    for (off, n) in ranges {
                        assert!(n > 0 && in_range(off, n));
                    }
                }
                IoPlan::Flush => assert!(g.supports_flush),
                IoPlan::Nothing => {}
            }
        }
    }
}

/// Namespace / discovery change notices and AER completions, as the transport raises them.
fn events(c: &mut Ctrlr, sqe: &Sqe) {
    match sqe.opcode % 3 {
        0 => {
            // The transport only reports nsids of the subsystem (at most MAX_NSID).
            let nsids = [sqe.nsid, sqe.cdw10, sqe.cdw11].map(|n| 1 + n.get() % 1024);
            let n = (sqe.cdw12.get() % 4) as usize;
            if c.namespaces_changed(&nsids[..n]).is_some() {
                c.aers.pop_front();
            }
        }
        1 => {
            if c.discovery_changed().is_some() {
                c.aers.pop_front();
            }
        }
        _ => {
            // CDW13 bit 0: a reservation notice for namespace CDW14 arrives first.
            if sqe.cdw13.get() & 1 != 0 {
                let notice = [
                    Notice::RegistrationPreempted,
                    Notice::ReservationReleased,
                    Notice::ReservationPreempted,
                ][(sqe.cdw13.get() >> 1) as usize % 3];
                if c.resv.push(sqe.cdw14.get(), notice) {
                    c.pending_events.push_back(resv::AEN_DW0);
                }
            }
            if c.take_event().is_some() {
                c.aers.pop_front();
            }
        }
    }
}

/// A reservation command (or the reservation check of an I/O command) against `state`.
/// Returns whether the record was a reservation command (otherwise it is planned as I/O).
fn reservation(
    state: &mut Reservations,
    sqe: &Sqe,
    xfer: u32,
    payload: &[u8],
    opts: &TransportOpts,
) -> bool {
    let host = [sqe.cdw2.get() as u8 % 3; 16];
    if let Some(access) = resv::access_of(sqe.opcode) {
        let _ = state.allows(&host, access);
        return false;
    }
    if sqe.opcode == wire::io_opc::RESERVATION_REPORT {
        match resv::report(state, sqe, xfer, opts.max_io_size) {
            Ok(d) => {
                assert_eq!(d.len() as u64, (sqe.cdw10.get() as u64 + 1) * 4);
                assert!(d.len() >= 64 && d.len() as u64 <= xfer as u64);
            }
            Err(st) => assert!(!st.is_success()),
        }
        return true;
    }
    let Some(decoded) = resv::decode(sqe, payload) else {
        return false;
    };
    let cmd = match decoded {
        Ok(c) => c,
        Err(st) => {
            assert!(!st.is_success());
            return true;
        }
    };
    let before = state.clone();
    match resv::apply(state, &host, cmd, sqe.cdw3.get() & 1 != 0) {
        Err(e) => {
            assert!(!resv::status_of(e).is_success());
            assert_eq!(*state, before, "a refused command changes nothing");
        }
        Ok(notices) => assert!(
            notices.iter().all(|(h, _)| *h != host),
            "a host is not notified of its own command"
        ),
    }
    let r = state.report_extended(64 + 64 * 4);
    let registrants = u16::from_le_bytes([r[5], r[6]]) as usize;
    assert!(registrants <= 3, "three hosts at most");
    if r[4] != 0 {
        assert!(
            (0..registrants).any(|i| r[64 + 64 * i + 2] & 1 != 0),
            "a held reservation has a holder among the registrants"
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use crate::Splits;

    /// Every committed seed, and a few thousand bit-flipped variants of each, pass the
    /// checks (a replay without libFuzzer: `cargo test` in fuzz/).
    #[test]
    fn seeds_and_their_mutants_pass() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/capsule_dispatch");
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        seeds.sort();
        for path in seeds {
            let seed = std::fs::read(&path).unwrap();
            super::check(&seed);
            let mut rng = Splits::new(seed.len() as u32 ^ 0x9e37_79b9, seed.len().max(2));
            for _ in 0..2000 {
                let mut m = seed.clone();
                for _ in 0..1 + rng.next_len() % 8 {
                    let at = rng.next_len() - 1;
                    m[at] ^= 1 << (rng.next_len() % 8);
                }
                super::check(&m);
            }
        }
    }
}
