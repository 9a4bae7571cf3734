//! NVMe reservations end to end: a real pollux process on two reactors (`-m 0x3`, sleeping
//! when idle, so the hosts' queues land on different reactors) and pollux's host library as
//! several hosts with their own host identifiers. Every type, who may read and write, the
//! register / acquire / preempt / preempt-and-abort / release / clear sequences with their
//! exact statuses, notifications (log page 0x80, mask, AEN), the host identifier and
//! reservation features, PTPL across a restart, and a corrupt PTPL file refused by name.

mod common;

use common::target_proc::{kill_if_running, spawn_pollux};
use common::{free_port, sock_path, Client};
use pollux::nvmf::host::reservation::{
    self as resv, ReservationStatus, ACQUIRE, CLEAR, CPTPL_SET, PREEMPT, PREEMPT_AND_ABORT,
    REGISTER, RELEASE, REPLACE, UNREGISTER,
};
use pollux::nvmf::host::{ConnectOpts, DataBuf, HostError, Request, SyncController, TransportId};
use pollux::nvmf::wire::{admin_opc, feat, io_opc, FeaturesCmd, Sqe, Status};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.pollux:resv";
const BDEV_UUID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
const NSID: u32 = 1;
const BS: u32 = 4096;

/// A pollux process exporting one 64 MiB malloc namespace (fixed bdev UUID).
struct Pollux {
    child: Child,
    port: u16,
    sock: PathBuf,
    dir: PathBuf,
}

impl Pollux {
    /// Starts pollux on two reactors; `ptpl`: the namespace keeps its reservations in
    /// `dir/ns1.ptpl`; `with_ns`: the config adds the namespace.
    fn start(dir: &Path, ptpl: bool, with_ns: bool) -> Pollux {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let sock = sock_path("resv");
        let mut ns = json!({"bdev_name": "Malloc0", "nsid": NSID});
        if ptpl {
            ns["ptpl_file"] = json!(dir.join("ns1.ptpl").to_str().unwrap());
        }
        let mut nvmf = vec![
            json!({"method": "nvmf_create_transport", "params": {"trtype": "TCP"}}),
            json!({"method": "nvmf_create_subsystem",
                   "params": {"nqn": NQN, "allow_any_host": true, "serial_number": "RESV0001"}}),
        ];
        if with_ns {
            nvmf.push(json!({"method": "nvmf_subsystem_add_ns",
                             "params": {"nqn": NQN, "namespace": ns}}));
        }
        nvmf.push(json!({"method": "nvmf_subsystem_add_listener",
                         "params": {"nqn": NQN, "listen_address": {"trtype": "TCP",
                                    "adrfam": "IPv4", "traddr": "127.0.0.1",
                                    "trsvcid": port.to_string()}}}));
        let config = json!({"subsystems": [
            {"subsystem": "bdev", "config": [{"method": "bdev_malloc_create",
                "params": {"name": "Malloc0", "num_blocks": 16384, "block_size": BS,
                           "uuid": BDEV_UUID}}]},
            {"subsystem": "nvmf", "config": nvmf}]});
        let path = dir.join("pollux.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let child = spawn_pollux(&["-m", "0x3", "--no-pin"], &sock, &path, &[], dir);
        let mut p = Pollux {
            child,
            port,
            sock,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&p.sock).is_err() {
            if let Some(st) = p.child.try_wait().unwrap() {
                panic!("pollux exited ({st}): {}", p.log());
            }
            assert!(Instant::now() < deadline, "pollux never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The socket answers while the config is still being applied: wait for RUNTIME
        // and for the listener (the config's last entry).
        Client::connect(&p.sock).call("framework_wait_init", None);
        while std::net::TcpStream::connect(("127.0.0.1", p.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pollux never listened on {}",
                p.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pollux.log")).unwrap_or_default()
    }

    /// Connects a controller of host `id` (host NQN and host id derived from `id`; calling
    /// it again makes another controller of the same host) with two I/O queues (the target
    /// spreads a host's connections over its two reactors).
    fn host(&self, id: u8) -> SyncController {
        let opts = ConnectOpts {
            hostnqn: Some(format!("nqn.2014-08.io.pollux:resv-host{id}")),
            hostid: Some(host_id(id)),
            io_queues: 2,
            timeout: Duration::from_secs(20),
            ..Default::default()
        };
        let trid = TransportId::tcp("127.0.0.1", self.port, NQN);
        SyncController::connect(&trid, opts)
            .unwrap_or_else(|e| panic!("host {id}: {e}\n{}", self.log()))
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "pollux did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops pollux and removes its test directory.
    fn stop_and_remove_dir(self) {
        let dir = self.dir.clone();
        self.stop();
        let _ = std::fs::remove_dir_all(dir);
    }
}

impl Drop for Pollux {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
        let _ = std::fs::remove_file(&self.sock);
    }
}

fn host_id(n: u8) -> [u8; 16] {
    let mut id = [0x5a; 16];
    id[15] = n;
    id
}

fn test_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pollux-resv-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn status<T: std::fmt::Debug>(r: Result<T, HostError>) -> Option<Status> {
    match r {
        Ok(_) => None,
        Err(e) => Some(
            e.nvme_status()
                .unwrap_or_else(|| panic!("not an NVMe status: {e}")),
        ),
    }
}

/// Asserts `r` failed with exactly `want` (SCT, SC; and DNR set).
#[track_caller]
fn assert_status<T: std::fmt::Debug>(r: Result<T, HostError>, want: Status, what: &str) {
    let got = status(r).unwrap_or_else(|| panic!("{what}: succeeded, wanted {want}"));
    assert!(
        got.same_code(want) && got.sct() == want.sct(),
        "{what}: got {got}, wanted {want}"
    );
    assert!(got.dnr(), "{what}: {got} without DNR");
}

const CONFLICT: Status = Status::RESERVATION_CONFLICT;

/// The status of a read on each I/O queue of `h` (they live on different reactors and
/// must agree).
fn may_read(h: &SyncController) -> Option<Status> {
    let on = |q| status(h.read(q, NSID, 7, 1, BS));
    let first = on(1);
    assert_eq!(on(2), first, "both reactors see the same reservation");
    first
}

fn may_write(h: &SyncController) -> Option<Status> {
    let on = |q| status(h.write(q, NSID, 7, 1, &[0xab; BS as usize]));
    let first = on(1);
    assert_eq!(on(2), first, "both reactors see the same reservation");
    first
}

fn report(h: &SyncController) -> ReservationStatus {
    let r = h.reservation_report(1, NSID).unwrap();
    assert_eq!(
        h.reservation_report(2, NSID).unwrap(),
        r,
        "both reactors agree"
    );
    r
}

#[test]
fn every_type_decides_who_reads_and_writes() {
    let p = Pollux::start(&test_dir("types"), false, true);
    let (a, b, c) = (p.host(1), p.host(2), p.host(3));
    // The hosts' I/O queues live on both reactors: a change applied on one is seen on the
    // other as soon as the command that made it completed.
    let stats = Client::connect(&p.sock).call("nvmf_get_stats", None);
    let groups = stats["poll_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{stats}");
    assert!(
        groups
            .iter()
            .all(|g| g["current_io_qpairs"].as_u64() >= Some(2)),
        "I/O queues on both reactors: {stats}"
    );
    // (rtype, registrant reads, registrant writes, stranger reads, stranger writes)
    let table = [
        (1, true, false, true, false),
        (2, false, false, false, false),
        (3, true, true, true, false),
        (4, true, true, false, false),
        (5, true, true, true, false),
        (6, true, true, false, false),
    ];
    for (rtype, rr, rw, or, ow) in table {
        a.reservation_register(1, NSID, REGISTER, false, 0, 0xa)
            .unwrap();
        b.reservation_register(1, NSID, REGISTER, false, 0, 0xb)
            .unwrap();
        a.reservation_acquire(1, NSID, ACQUIRE, rtype, 0xa, 0)
            .unwrap();
        let r = report(&c);
        assert_eq!((r.rtype, r.registrants), (rtype, 2), "type {rtype}");
        assert!(r.holds(&host_id(1)), "type {rtype}: A holds it");
        let all_regs = rtype >= 5;
        assert_eq!(r.holds(&host_id(2)), all_regs, "type {rtype}: B holds it");
        assert_eq!(may_read(&a), None, "type {rtype}: holder reads");
        assert_eq!(may_write(&a), None, "type {rtype}: holder writes");
        let expect = |ok: bool| if ok { None } else { Some(CONFLICT.with_dnr()) };
        assert_eq!(may_read(&b), expect(rr), "type {rtype}: registrant read");
        assert_eq!(may_write(&b), expect(rw), "type {rtype}: registrant write");
        assert_eq!(may_read(&c), expect(or), "type {rtype}: stranger read");
        assert_eq!(may_write(&c), expect(ow), "type {rtype}: stranger write");
        if !ow {
            // Every command of the write group is refused, not only Write.
            assert_status(c.flush(1, NSID), CONFLICT, "stranger flush");
            assert_status(
                c.write_zeroes(1, NSID, 0, 1),
                CONFLICT,
                "stranger write zeroes",
            );
            assert_status(c.deallocate(1, NSID, &[(0, 1)]), CONFLICT, "stranger DSM");
        }
        // Release with the wrong type is Invalid Field; the right one ends it.
        let wrong = if rtype == 1 { 2 } else { 1 };
        assert_status(
            a.reservation_release(1, NSID, RELEASE, wrong, 0xa),
            Status::INVALID_FIELD,
            "release of another type",
        );
        a.reservation_release(1, NSID, RELEASE, rtype, 0xa).unwrap();
        assert_eq!(report(&c).rtype, 0);
        assert_eq!(may_write(&c), None, "type {rtype}: released");
        a.reservation_register(1, NSID, UNREGISTER, false, 0xa, 0)
            .unwrap();
        b.reservation_register(1, NSID, UNREGISTER, false, 0xb, 0)
            .unwrap();
    }
    assert_eq!(report(&a).registrants, 0);
    drop((a, b, c));
    p.stop_and_remove_dir();
}

#[test]
fn register_acquire_preempt_release_clear_sequences() {
    let p = Pollux::start(&test_dir("seq"), false, true);
    let (a, b, c) = (p.host(1), p.host(2), p.host(3));
    // A second controller of host A shares its registration.
    let a2 = p.host(1);

    // Register: the same key again is fine, another is a conflict; Replace checks CRKEY
    // unless IEKEY; Unregister of a host not registered is a conflict.
    a.reservation_register(1, NSID, REGISTER, false, 0, 0xa)
        .unwrap();
    let gen0 = report(&a).generation;
    a2.reservation_register(1, NSID, REGISTER, false, 0, 0xa)
        .unwrap();
    assert_status(
        a2.reservation_register(1, NSID, REGISTER, false, 0, 0xaa),
        CONFLICT,
        "register again with another key",
    );
    assert_status(
        a.reservation_register(1, NSID, REPLACE, false, 0x99, 0xa1),
        CONFLICT,
        "replace with a wrong key",
    );
    a.reservation_register(1, NSID, REPLACE, false, 0xa, 0xa1)
        .unwrap();
    a2.reservation_register(1, NSID, REPLACE, true, 0, 0xa)
        .unwrap();
    assert_status(
        c.reservation_register(1, NSID, UNREGISTER, false, 0, 0),
        CONFLICT,
        "unregister a stranger",
    );
    assert_eq!(report(&b).key_of(&host_id(1)), Some(0xa));
    assert!(report(&b).generation > gen0, "the generation grows");
    b.reservation_register(1, NSID, REGISTER, false, 0, 0xb)
        .unwrap();
    c.reservation_register(1, NSID, REGISTER, false, 0, 0xc)
        .unwrap();

    // Acquire: a wrong key, an unregistered host, IEKEY and an unknown type are refused.
    assert_status(
        a.reservation_acquire(1, NSID, ACQUIRE, 1, 0x99, 0),
        CONFLICT,
        "acquire with a wrong key",
    );
    assert_status(
        a.submit(1, resv::acquire(NSID, ACQUIRE, true, 1, 0xa, 0))
            .unwrap()
            .status(),
        Status::INVALID_FIELD,
        "acquire with IEKEY",
    );
    assert_status(
        a.reservation_acquire(1, NSID, ACQUIRE, 7, 0xa, 0),
        Status::INVALID_FIELD,
        "type 7",
    );
    assert_status(
        a.reservation_acquire(1, NSID, 3, 1, 0xa, 0),
        Status::INVALID_FIELD,
        "acquire action 3",
    );
    a.reservation_acquire(1, NSID, ACQUIRE, 1, 0xa, 0).unwrap();
    a2.reservation_acquire(1, NSID, ACQUIRE, 1, 0xa, 0).unwrap();
    assert_eq!(may_write(&a2), None, "the holder's other controller writes");
    assert_status(
        b.reservation_acquire(1, NSID, ACQUIRE, 1, 0xb, 0),
        CONFLICT,
        "acquire of a held reservation",
    );
    assert_status(
        a.reservation_acquire(1, NSID, ACQUIRE, 2, 0xa, 0),
        CONFLICT,
        "the holder asks another type with Acquire",
    );

    // Preempt: B takes A's reservation (PRKEY = A's key), A is unregistered.
    let before = report(&b).generation;
    b.reservation_acquire(1, NSID, PREEMPT, 2, 0xb, 0xa)
        .unwrap();
    let r = report(&c);
    assert!(r.holds(&host_id(2)) && r.rtype == 2);
    assert_eq!(r.key_of(&host_id(1)), None, "A's registration went");
    assert_eq!(r.generation, before + 1);
    assert_eq!(may_write(&a), Some(CONFLICT.with_dnr()));
    assert_eq!(may_read(&a2), Some(CONFLICT.with_dnr()), "type 2: no reads");
    assert_status(
        a.reservation_release(1, NSID, RELEASE, 2, 0xa),
        CONFLICT,
        "release by an unregistered host",
    );
    // Preempt with a key nobody has: conflict; PRKEY 0 against a holder: invalid.
    assert_status(
        c.reservation_acquire(1, NSID, PREEMPT, 1, 0xc, 0x77),
        CONFLICT,
        "preempt of an unknown key",
    );
    assert_status(
        c.reservation_acquire(1, NSID, PREEMPT, 1, 0xc, 0),
        Status::INVALID_FIELD,
        "preempt with key 0 of a single holder",
    );
    // Preempt and Abort: C takes B's, as type 4; B is gone, C holds it.
    c.reservation_acquire(1, NSID, PREEMPT_AND_ABORT, 4, 0xc, 0xb)
        .unwrap();
    let r = report(&a);
    assert!(r.holds(&host_id(3)) && r.rtype == 4 && r.registrants == 1);
    assert_eq!(may_read(&b), Some(CONFLICT.with_dnr()));
    // A non-holder's Release changes nothing; Clear unregisters everyone.
    a.reservation_register(1, NSID, REGISTER, false, 0, 0xa)
        .unwrap();
    a.reservation_release(1, NSID, RELEASE, 4, 0xa).unwrap();
    assert_eq!(report(&a).rtype, 4);
    assert_eq!(may_write(&a), None, "type 4: a registrant writes");
    assert_status(
        a.reservation_release(1, NSID, 2, 4, 0xa),
        Status::INVALID_FIELD,
        "release action 2",
    );
    a.reservation_release(1, NSID, CLEAR, 0, 0xa).unwrap();
    let r = report(&b);
    assert_eq!((r.rtype, r.registrants), (0, 0));
    assert_eq!(may_write(&b), None);

    // Report: without EDS the 128-bit host ids cannot be reported; too short is invalid.
    let cpl = a.submit(1, resv::report(NSID, 4096, false)).unwrap();
    assert_status(
        cpl.status(),
        Status::HOST_ID_INCONSISTENT_FORMAT,
        "report without EDS",
    );
    let cpl = a.submit(1, resv::report(NSID, 32, true)).unwrap();
    assert_status(cpl.status(), Status::INVALID_FIELD, "report of 32 bytes");
    // Reservation commands on a namespace that does not exist.
    assert_status(
        a.reservation_register(1, 9, REGISTER, false, 0, 1),
        Status::INVALID_NAMESPACE_OR_FORMAT,
        "register on nsid 9",
    );
    // CPTPL without a PTPL file: Invalid Field.
    assert_status(
        a.submit(1, resv::register(NSID, REGISTER, false, CPTPL_SET, 0, 1))
            .unwrap()
            .status(),
        Status::INVALID_FIELD,
        "CPTPL without ptpl_file",
    );
    drop((a, a2, b, c));
    p.stop_and_remove_dir();
}

#[test]
fn notifications_log_page_mask_and_aen() {
    let p = Pollux::start(&test_dir("notify"), false, true);
    let (a, b) = (p.host(1), p.host(2));
    // A second controller of host B (its admin queue on the other reactor) is told too.
    let b2 = p.host(2);
    a.reservation_register(1, NSID, REGISTER, false, 0, 0xa)
        .unwrap();
    b.reservation_register(1, NSID, REGISTER, false, 0, 0xb)
        .unwrap();
    assert_eq!(
        b.reservation_notification().unwrap().log_type,
        0,
        "nothing yet: an empty page"
    );
    // A Registrants Only reservation released: B is told, by an AEN and the log page.
    let aer = b.async_event_request();
    a.reservation_acquire(1, NSID, ACQUIRE, 3, 0xa, 0).unwrap();
    a.reservation_release(1, NSID, RELEASE, 3, 0xa).unwrap();
    let dw0 = aer
        .recv_timeout(Duration::from_secs(10))
        .expect("an AEN")
        .unwrap()
        .status()
        .unwrap();
    assert_eq!(dw0 & 0x7, 6, "I/O command specific event");
    assert_eq!(dw0 >> 8 & 0xff, 0, "reservation log page available");
    assert_eq!(dw0 >> 16 & 0xff, 0x80, "log page 0x80");
    let page = b.reservation_notification().unwrap();
    assert_eq!(
        (page.log_type, page.nsid, page.count, page.available),
        (2, NSID, 1, 0)
    );
    assert_eq!(
        b.reservation_notification().unwrap().log_type,
        0,
        "read once"
    );
    let page2 = b2.reservation_notification().unwrap();
    assert_eq!(
        (page2.log_type, page2.count),
        (2, 1),
        "every controller of the host has its own log"
    );
    assert_eq!(
        a.reservation_notification().unwrap().log_type,
        0,
        "the releasing host is not told"
    );
    // Preempted: B's registration goes; two notices queue up (count 2 and 3).
    a.reservation_acquire(1, NSID, ACQUIRE, 3, 0xa, 0).unwrap();
    a.reservation_release(1, NSID, RELEASE, 3, 0xa).unwrap();
    a.reservation_acquire(1, NSID, PREEMPT, 1, 0xa, 0xb)
        .unwrap();
    let first = b.reservation_notification().unwrap();
    assert_eq!((first.log_type, first.count, first.available), (2, 2, 1));
    let second = b.reservation_notification().unwrap();
    assert_eq!((second.log_type, second.count, second.available), (1, 3, 0));

    // The mask: B masks Reservation Released (bit 2) on namespace 1, then is not told.
    b.reservation_register(1, NSID, REGISTER, false, 0, 0xb)
        .unwrap();
    a.reservation_release(1, NSID, RELEASE, 1, 0xa).unwrap();
    assert_eq!(b.set_notification_mask(NSID, 1 << 2).unwrap(), 1 << 2);
    assert_eq!(
        b.ns_features(false, NSID, feat::RESERVATION_NOTIFICATION_MASK, 0)
            .unwrap(),
        1 << 2
    );
    a.reservation_acquire(1, NSID, ACQUIRE, 4, 0xa, 0).unwrap();
    a.reservation_release(1, NSID, RELEASE, 4, 0xa).unwrap();
    assert_eq!(b.reservation_notification().unwrap().log_type, 0, "masked");
    assert_status(
        b.set_notification_mask(NSID, 1),
        Status::INVALID_FIELD,
        "mask bit 0 is reserved",
    );
    assert_status(
        b.set_notification_mask(5, 0),
        Status::INVALID_NAMESPACE_OR_FORMAT,
        "mask of nsid 5",
    );
    // Clear: every other registrant gets Reservation Preempted (mask on Released only).
    a.reservation_acquire(1, NSID, ACQUIRE, 1, 0xa, 0).unwrap();
    a.reservation_release(1, NSID, CLEAR, 0, 0xa).unwrap();
    assert_eq!(b.reservation_notification().unwrap().log_type, 3);
    drop((a, b, b2));
    p.stop_and_remove_dir();
}

#[test]
fn identify_and_features() {
    let p = Pollux::start(&test_dir("ident"), false, true);
    let a = p.host(1);
    let id = a.identify_controller().unwrap();
    assert_ne!(id.oncs.get() & 1 << 5, 0, "ONCS: reservations");
    let ns = a.identify_namespace(NSID).unwrap();
    assert_eq!(
        ns.rescap, 0xfe,
        "every type and IEKEY, no PTPL without a file"
    );
    assert_eq!(ns.nmic & 1, 1, "shared namespace");
    // Host Identifier: Get with EXHID returns the Connect's, without is invalid, Set is a
    // command sequence error (fabrics hosts give it in Connect).
    let get_hostid = |exhid: u32| {
        let sqe = FeaturesCmd {
            nsid: 0,
            fid: feat::HOST_IDENTIFIER,
            sel: 0,
            save: false,
            cdw11: exhid,
        }
        .to_sqe(admin_opc::GET_FEATURES, 0);
        a.submit(
            0,
            Request::new(sqe, DataBuf::Read(pollux::buf::IoBuf::zeroed(16))),
        )
        .unwrap()
    };
    let c = get_hostid(1);
    c.status().unwrap();
    assert_eq!(&c.buf.unwrap()[..16], &host_id(1));
    assert_status(
        get_hostid(0).status(),
        Status::INVALID_FIELD,
        "Get Host Id without EXHID",
    );
    assert_status(
        a.set_features(feat::HOST_IDENTIFIER, 1),
        Status::COMMAND_SEQUENCE_ERROR,
        "Set Host Identifier",
    );
    // Reservation Persistence without a PTPL file: off, and cannot be set.
    assert_eq!(
        a.ns_features(false, NSID, feat::RESERVATION_PERSISTENCE, 0)
            .unwrap(),
        0
    );
    assert_status(
        a.ns_features(true, NSID, feat::RESERVATION_PERSISTENCE, 1),
        Status::INVALID_FIELD,
        "PTPL without a file",
    );
    // A reservation command the opcode table does not know: Invalid Opcode stays.
    let mut sqe = Sqe::new(0x1d, 0, NSID);
    sqe.cdw10 = 0.into();
    let cpl = a.submit(1, Request::new(sqe, DataBuf::None)).unwrap();
    assert!(status(cpl.status())
        .unwrap()
        .same_code(Status::INVALID_OPCODE));
    let _ = io_opc::RESERVATION_REPORT;
    drop(a);
    p.stop_and_remove_dir();
}

#[test]
fn ptpl_survives_a_restart_and_a_corrupt_file_is_refused() {
    let dir = test_dir("ptpl");
    let file = dir.join("ns1.ptpl");
    let p = Pollux::start(&dir, true, true);
    let (a, b) = (p.host(1), p.host(2));
    assert_eq!(a.identify_namespace(NSID).unwrap().rescap, 0xff);
    a.submit(1, resv::register(NSID, REGISTER, false, CPTPL_SET, 0, 0xa))
        .unwrap()
        .status()
        .unwrap();
    b.reservation_register(1, NSID, REGISTER, false, 0, 0xb)
        .unwrap();
    a.reservation_acquire(1, NSID, ACQUIRE, 1, 0xa, 0).unwrap();
    assert_eq!(
        a.ns_features(false, NSID, feat::RESERVATION_PERSISTENCE, 0)
            .unwrap(),
        1
    );
    // The file is SPDK's format and was written before the command completed.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("the PTPL file")).unwrap();
    assert_eq!(saved["ptpl"], json!(true));
    assert_eq!(saved["rtype"], json!(1));
    assert_eq!(saved["crkey"], json!(0xa));
    assert_eq!(saved["bdev_uuid"], json!(BDEV_UUID));
    assert_eq!(saved["registrants"].as_array().unwrap().len(), 2);
    let before = report(&a);
    assert!(before.ptpl);
    drop((a, b));
    p.stop();

    // After a restart the namespace has the same registrants and holder.
    let p = Pollux::start(&dir, true, true);
    let (a, b) = (p.host(1), p.host(2));
    let after = report(&b);
    assert_eq!(
        (after.rtype, after.registrants, after.ptpl),
        (1, 2, true),
        "{after:?}"
    );
    assert!(after.holds(&host_id(1)));
    assert_eq!(after.key_of(&host_id(2)), Some(0xb));
    assert_eq!(may_write(&b), Some(CONFLICT.with_dnr()));
    assert_eq!(may_write(&a), None);
    // PTPL turned off through the feature: the file says so, and a restart starts empty.
    a.ns_features(true, NSID, feat::RESERVATION_PERSISTENCE, 0)
        .unwrap();
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["ptpl"], json!(false));
    // Every namespace with a PTPL file at once (nsid FFFFFFFFh, as SPDK).
    a.ns_features(true, u32::MAX, feat::RESERVATION_PERSISTENCE, 1)
        .unwrap();
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["ptpl"], json!(true));
    drop((a, b));
    p.stop();

    // A corrupt file: adding the namespace fails with an error naming the file.
    std::fs::write(&file, b"{\"ptpl\": tru").unwrap();
    let p = Pollux::start(&dir, false, false);
    let mut rpc = Client::connect(&p.sock);
    let (_, msg) = rpc.call_err(
        "nvmf_subsystem_add_ns",
        Some(
            json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc0", "nsid": NSID,
                     "ptpl_file": file.to_str().unwrap()}}),
        ),
    );
    assert!(msg.contains(file.to_str().unwrap()), "{msg}");
    // The bdev was not left claimed: the namespace can be added without the file.
    rpc.call(
        "nvmf_subsystem_add_ns",
        Some(json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc0", "nsid": NSID}})),
    );
    // The saved configuration keeps ptpl_file.
    std::fs::remove_file(&file).unwrap();
    rpc.call(
        "nvmf_subsystem_remove_ns",
        Some(json!({"nqn": NQN, "nsid": NSID})),
    );
    rpc.call(
        "nvmf_subsystem_add_ns",
        Some(
            json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc0", "nsid": NSID,
                     "ptpl_file": file.to_str().unwrap()}}),
        ),
    );
    let config = rpc.call("framework_get_config", Some(json!({"name": "nvmf"})));
    assert!(
        config.to_string().contains("ptpl_file"),
        "saved config: {config}"
    );
    p.stop_and_remove_dir();
}

/// `nvmf_subsystem_add_ns -p FILE` from pollux's scripts/rpc.py and from SPDK's own rpc.py
/// (POLLUX_SPDK_RPC; skipped loudly without it) gives the namespace its PTPL file.
#[test]
fn rpc_py_ptpl_file_flag() {
    let p = Pollux::start(&test_dir("rpcpy"), false, false);
    let file = p.dir.join("ns1.ptpl");
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rpc.py");
    let mut clients = vec![("scripts/rpc.py", {
        let mut c = Command::new("python3");
        c.arg(&ours);
        c
    })];
    match std::env::var_os("POLLUX_SPDK_RPC") {
        Some(spdk) => clients.push(("SPDK's rpc.py", Command::new(spdk))),
        None => common::skip(
            "rpc_py_ptpl_file_flag",
            "POLLUX_SPDK_RPC is not set: SPDK's rpc.py -p/--ptpl-file not checked",
        ),
    }
    for (name, mut cmd) in clients {
        let add_ns = [
            "nvmf_subsystem_add_ns",
            "-n",
            "1",
            "-p",
            file.to_str().unwrap(),
            NQN,
            "Malloc0",
        ];
        let (ok, _, err) = common::run_rpc_client(&mut cmd, &p.sock, &add_ns);
        assert!(ok, "{name}: {err}");
        let mut rpc = Client::connect(&p.sock);
        let config = rpc.call("framework_get_config", Some(json!({"name": "nvmf"})));
        assert!(
            config.to_string().contains(file.to_str().unwrap()),
            "{name}: {config}"
        );
        let a = p.host(1);
        assert_eq!(a.identify_namespace(NSID).unwrap().rescap, 0xff, "{name}");
        drop(a);
        rpc.call(
            "nvmf_subsystem_remove_ns",
            Some(json!({"nqn": NQN, "nsid": NSID})),
        );
    }
    p.stop_and_remove_dir();
}

/// Two hosts take the reservation from each other 100 times; after each completion the
/// loser's writes are refused and the winner's accepted on both reactors at once.
#[test]
fn preempt_ping_pong_is_seen_at_once_on_both_reactors() {
    let p = Pollux::start(&test_dir("pingpong"), false, true);
    let hosts = [p.host(1), p.host(2)];
    let keys = [0x1u64, 0x2u64];
    for (h, k) in hosts.iter().zip(keys) {
        h.reservation_register(1, NSID, REGISTER, false, 0, k)
            .unwrap();
    }
    hosts[0]
        .reservation_acquire(1, NSID, ACQUIRE, 1, keys[0], 0)
        .unwrap();
    for round in 0..100 {
        let (w, l) = if round % 2 == 0 { (1, 0) } else { (0, 1) };
        // The winner preempts the loser's key on alternating queues (reactors); the loser
        // registers again right after, so the next round can take it back.
        let q = 1 + (round % 2) as u16;
        hosts[w]
            .reservation_acquire(q, NSID, PREEMPT, 1, keys[w], keys[l])
            .unwrap();
        assert_eq!(
            may_write(&hosts[l]),
            Some(CONFLICT.with_dnr()),
            "round {round}"
        );
        assert_eq!(may_write(&hosts[w]), None, "round {round}");
        hosts[l]
            .reservation_register(q, NSID, REGISTER, false, 0, keys[l])
            .unwrap();
    }
    drop(hosts);
    p.stop_and_remove_dir();
}

/// Preempt and Abort completes only after the preempted host's write, started before on a
/// slow (1 s delay) namespace, finished; a plain Preempt does not wait for it.
#[test]
fn preempt_and_abort_waits_for_the_preempted_hosts_io() {
    let p = Pollux::start(&test_dir("abort"), false, false);
    let mut rpc = Client::connect(&p.sock);
    rpc.call(
        "bdev_delay_create",
        Some(json!({"base_bdev_name": "Malloc0", "name": "Slow0",
                    "avg_read_latency": 0, "p99_read_latency": 0,
                    "avg_write_latency": 1_000_000, "p99_write_latency": 1_000_000})),
    );
    rpc.call(
        "nvmf_subsystem_add_ns",
        Some(json!({"nqn": NQN, "namespace": {"bdev_name": "Slow0", "nsid": NSID}})),
    );
    let (a, b) = (p.host(1), p.host(2));
    let slow_write = |h: &SyncController| {
        let sqe = Sqe::rw(io_opc::WRITE, 0, NSID, 3, 1, Default::default());
        let buf = pollux::buf::IoBuf::zeroed(BS as usize);
        h.submit_later(1, Request::new(sqe, DataBuf::Write(buf)))
    };
    for action in [PREEMPT, PREEMPT_AND_ABORT] {
        a.reservation_register(1, NSID, REGISTER, false, 0, 0xa)
            .unwrap();
        b.reservation_register(1, NSID, REGISTER, false, 0, 0xb)
            .unwrap();
        b.reservation_acquire(1, NSID, ACQUIRE, 1, 0xb, 0).unwrap();
        let write = slow_write(&b);
        // The write has reached the (slow) bdev before the preempt is sent.
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        a.reservation_acquire(1, NSID, action, 1, 0xa, 0xb).unwrap();
        let took = started.elapsed();
        // The write's completion travels on B's own connection: it may reach B a moment
        // after A's; what counts is that it ended before A's command did.
        write
            .recv_timeout(Duration::from_secs(10))
            .expect("the write ends")
            .unwrap();
        let write_after = started.elapsed().saturating_sub(took);
        if action == PREEMPT_AND_ABORT {
            assert!(
                took > Duration::from_millis(500) && write_after < Duration::from_millis(200),
                "Preempt and Abort took {took:?}, the write ended {write_after:?} after it"
            );
        } else {
            assert!(
                write_after > Duration::from_millis(500),
                "plain Preempt took {took:?} and should not wait ({write_after:?})"
            );
        }
        a.reservation_release(1, NSID, CLEAR, 0, 0xa).unwrap();
    }
    drop((a, b));
    p.stop_and_remove_dir();
}
