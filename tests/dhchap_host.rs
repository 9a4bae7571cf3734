//! DH-HMAC-CHAP end to end in process: pollux's host library authenticating to a real pollux target (every hash, NULL and every FFDHE group, one-way and bidirectional, then I/O), its refusals with their reasons, and raw AUTH_Send / AUTH_Receive exchanges the library would never send.
//!
//! One app per test exports a malloc namespace to a subsystem whose hosts are allowed by
//! name, each with keyring keys (files of mode 0600 in a temporary directory). The raw
//! tests drive the blocking test host of `common::nvme` and the protocol's own host state
//! machine (`HostAuth`), so that each message can be replayed, truncated or re-labelled.

mod common;

use common::nvme::{export, rw, Done, Host, HOSTNQN};
use pollux::nvmf::auth::dhchap::HostAuth;
use pollux::nvmf::auth::messages::{FailureReason, Message};
use pollux::nvmf::host::{
    dhchap_sqe, ConnectOpts, DhchapOpts, HostError, SyncController, TransportId,
};
use pollux::nvmf::secret::{DhchapSecret, Hash};
use pollux::nvmf::wire::{self, io_opc, prop, Status};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const NQN: &str = "nqn.2016-06.io.pollux:auth-host";
/// Authenticates one way (the controller checks the host).
const HOST_ONE_WAY: &str = "nqn.2014-08.org.nvmexpress:uuid:0000000a-0000-0000-0000-000000000001";
/// Authenticates both ways (a controller key is set too).
const HOST_BOTH_WAYS: &str = "nqn.2014-08.org.nvmexpress:uuid:0000000b-0000-0000-0000-000000000002";
/// Allowed without a key: no authentication.
const HOST_NO_KEY: &str = "nqn.2014-08.org.nvmexpress:uuid:0000000c-0000-0000-0000-000000000003";

fn host_secret() -> DhchapSecret {
    DhchapSecret {
        transform: Some(Hash::Sha256),
        key: (0..32).map(|i| i as u8 ^ 0x5a).collect(),
    }
}

fn ctrl_secret() -> DhchapSecret {
    DhchapSecret {
        transform: Some(Hash::Sha512),
        key: (0..64).map(|i| i as u8 ^ 0xc3).collect(),
    }
}

fn other_secret() -> DhchapSecret {
    DhchapSecret {
        transform: None,
        key: vec![7; 48],
    }
}

/// A running pollux with the subsystem, its hosts and their keys.
struct Target {
    app: pollux::app::RunningApp,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Target {
    fn start(tag: &str) -> Target {
        let app = common::start(common::test_options(tag));
        let mut rpc = |m: &str, p| common::nvme::call(&app, m, p);
        let port = export(&mut rpc, NQN, "Malloc0", 16, json!({}), false);
        let dir = std::env::temp_dir().join(format!("pollux-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, secret) in [("hk", host_secret()), ("ck", ctrl_secret())] {
            let path = dir.join(name);
            std::fs::write(&path, secret.format()).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            rpc(
                "keyring_file_add_key",
                json!({"name": name, "path": path.display().to_string()}),
            )
            .unwrap();
        }
        for params in [
            json!({"nqn": NQN, "host": HOST_ONE_WAY, "dhchap_key": "hk"}),
            json!({"nqn": NQN, "host": HOST_BOTH_WAYS, "dhchap_key": "hk", "dhchap_ctrlr_key": "ck"}),
            json!({"nqn": NQN, "host": HOST_NO_KEY}),
            json!({"nqn": NQN, "host": HOSTNQN, "dhchap_key": "hk"}),
        ] {
            rpc("nvmf_subsystem_add_host", params).unwrap();
        }
        Target { app, port, dir }
    }

    fn trid(&self) -> TransportId {
        TransportId::tcp("127.0.0.1", self.port, NQN)
    }

    fn connect(
        &self,
        hostnqn: &str,
        dhchap: Option<DhchapOpts>,
    ) -> Result<SyncController, HostError> {
        let opts = ConnectOpts {
            hostnqn: Some(hostnqn.into()),
            io_queues: 1,
            queue_depth: 8,
            dhchap,
            timeout: Duration::from_secs(60),
            ..Default::default()
        };
        SyncController::connect(&self.trid(), opts)
    }
}

/// Writes a block and reads it back on I/O queue 1.
fn io_round_trip(c: &SyncController, seed: u8) {
    let nsid = c.active_namespaces().unwrap()[0];
    let bs = c.identify_namespace(nsid).unwrap().block_size().unwrap();
    let data: Vec<u8> = (0..bs as usize).map(|i| (i as u8) ^ seed).collect();
    c.write(1, nsid, seed as u64, 1, &data).unwrap();
    assert!(c.read(1, nsid, seed as u64, 1, bs).unwrap()[..] == data[..]);
}

fn auth_error(r: Result<SyncController, HostError>) -> (Option<FailureReason>, String) {
    match r {
        Err(HostError::Auth { reason, detail }) => (reason, detail),
        Err(e) => panic!("expected an authentication error, got {e}"),
        Ok(_) => panic!("expected an authentication error, the host got in"),
    }
}

#[test]
fn host_library_authenticates_with_every_group_and_hash() {
    let t = Target::start("dhchap-host-groups");
    let hashes = [Hash::Sha256, Hash::Sha384, Hash::Sha512];
    let mut n = 0u8;
    for group in 0u8..=5 {
        for (i, hash) in hashes.iter().enumerate() {
            // Both directions for every group and every hash, over the 18 pairs.
            let both_ways = (group as usize + i) % 2 == 1;
            let (host, ctrl) = if both_ways {
                (HOST_BOTH_WAYS, Some(ctrl_secret()))
            } else {
                (HOST_ONE_WAY, None)
            };
            let mut opts = DhchapOpts::new(host_secret(), ctrl);
            opts.digests = vec![*hash];
            opts.dhgroups = vec![group];
            let c = t
                .connect(host, Some(opts))
                .unwrap_or_else(|e| panic!("{hash:?} group {group} both ways {both_ways}: {e}"));
            n += 1;
            io_round_trip(&c, n);
            c.disconnect().unwrap();
        }
    }
    // A host the subsystem holds no key for is not asked to authenticate.
    let c = t
        .connect(HOST_NO_KEY, Some(DhchapOpts::new(host_secret(), None)))
        .unwrap();
    io_round_trip(&c, 99);
    c.disconnect().unwrap();
}

#[test]
fn host_library_refusals_carry_their_reason() {
    let t = Target::start("dhchap-host-refused");
    // A wrong host key: the controller's Failure1 "authentication failed".
    let (reason, detail) =
        auth_error(t.connect(HOST_ONE_WAY, Some(DhchapOpts::new(other_secret(), None))));
    assert_eq!(reason, Some(FailureReason::Failed), "{detail}");
    assert!(detail.contains("Failure1"), "{detail}");
    // No key at all where the subsystem requires one: refused at once, without a hang.
    let (reason, detail) = auth_error(t.connect(HOST_ONE_WAY, None));
    assert_eq!(reason, None);
    assert!(detail.contains("requires authentication"), "{detail}");
    // The controller proves another controller key than the host holds: the host finds it.
    let (reason, detail) = auth_error(t.connect(
        HOST_BOTH_WAYS,
        Some(DhchapOpts::new(host_secret(), Some(other_secret()))),
    ));
    assert_eq!(reason, Some(FailureReason::Failed), "{detail}");
    assert!(detail.contains("R2"), "{detail}");
    // The host asks the controller to prove a key the subsystem does not hold for it.
    let (reason, detail) = auth_error(t.connect(
        HOST_ONE_WAY,
        Some(DhchapOpts::new(host_secret(), Some(ctrl_secret()))),
    ));
    assert_eq!(reason, Some(FailureReason::Failed), "{detail}");
    // The right keys still work afterwards.
    let c = t
        .connect(
            HOST_BOTH_WAYS,
            Some(DhchapOpts::new(host_secret(), Some(ctrl_secret()))),
        )
        .unwrap();
    io_round_trip(&c, 3);
    c.disconnect().unwrap();
}

// ---- raw AUTH_Send / AUTH_Receive ------------------------------------------------------

const RECEIVE_LEN: u32 = 4096;

fn send(h: &mut Host, payload: &[u8]) {
    let d = h.run(dhchap_sqe(true, payload.len() as u32), Some(payload), 0);
    assert!(d.ok(), "AUTH_Send: {:?}", d.cqe.status());
}

fn receive(h: &mut Host) -> Message {
    let d = h.run(dhchap_sqe(false, RECEIVE_LEN), None, RECEIVE_LEN);
    assert!(d.ok(), "AUTH_Receive: {:?}", d.cqe.status());
    Message::decode(&d.data).expect("the controller's message decodes")
}

fn expect_failure1(h: &mut Host, want: FailureReason) {
    match receive(h) {
        Message::Failure1 { reason, .. } => assert_eq!(reason, want),
        other => panic!("expected Failure1 {want:?}, got {other:?}"),
    }
}

fn raw_host(tid: u16) -> HostAuth {
    HostAuth::new(HOSTNQN, NQN, host_secret(), None, tid)
}

/// A whole transaction on a raw queue; returns the Reply sent.
fn authenticate(h: &mut Host, txn: &mut HostAuth) -> Vec<u8> {
    send(h, &txn.negotiate());
    let challenge = receive(h).encode();
    let reply = txn.reply(&challenge).expect("a reply");
    send(h, &reply);
    let success1 = receive(h).encode();
    assert_eq!(txn.success(&success1), Ok(None));
    reply
}

fn identify(h: &mut Host) -> Done {
    h.identify(wire::cns::CONTROLLER, 0)
}

fn assert_auth_required(d: &Done, what: &str) {
    assert_eq!(
        d.cqe.status(),
        Status::AUTHENTICATION_REQUIRED.with_dnr(),
        "{what}"
    );
}

/// An admin queue connected (Connect answered with AUTHREQ.ATR) but not authenticated.
fn admin_queue(port: u16) -> Host {
    let mut h = Host::connect(port, false, false);
    let d = h.fabric_connect(0, NQN, HOSTNQN, 0xffff, 31, 0);
    assert!(d.ok(), "admin connect: {:?}", d.cqe.status());
    assert_ne!(
        d.cqe.dw0.get() & wire::CONNECT_AUTHREQ_ATR,
        0,
        "AUTHREQ.ATR"
    );
    h
}

#[test]
fn raw_commands_before_and_during_authentication() {
    let t = Target::start("dhchap-host-raw");
    // Before authentication: admin commands refused, fabrics ones (Property Get) served.
    let mut admin = admin_queue(t.port);
    assert_auth_required(&identify(&mut admin), "Identify before authentication");
    assert!(admin.prop_get(prop::CAP, true).ok());
    let mut txn = raw_host(10);
    authenticate(&mut admin, &mut txn);
    assert!(admin.prop_set(prop::CC, 1 | 6 << 16 | 4 << 20).ok());
    assert_eq!(admin.prop_get(prop::CSTS, false).cqe.dw0.get() & 1, 1);
    assert!(identify(&mut admin).ok());

    // An I/O queue: refused until it authenticates on its own.
    let mut io = Host::connect(t.port, false, false);
    let d = io.fabric_connect(1, NQN, HOSTNQN, admin.cntlid, 31, 0);
    assert!(d.ok() && d.cqe.dw0.get() & wire::CONNECT_AUTHREQ_ATR != 0);
    io.in_capsule = 4096;
    assert_auth_required(
        &io.run(rw(io_opc::READ, 0, 1), None, 4096),
        "Read before authentication",
    );
    let mut io_txn = raw_host(11);
    authenticate(&mut io, &mut io_txn);
    assert!(io.run(rw(io_opc::READ, 0, 1), None, 4096).ok());

    // Re-authentication on an authenticated queue: commands keep running meanwhile.
    let mut again = raw_host(12);
    send(&mut admin, &again.negotiate());
    assert!(
        identify(&mut admin).ok(),
        "commands during re-authentication"
    );
    let challenge = receive(&mut admin).encode();
    let reply = again.reply(&challenge).unwrap();
    send(&mut admin, &reply);
    assert!(matches!(receive(&mut admin), Message::Success1 { .. }));
    assert!(identify(&mut admin).ok());
    // A failed re-authentication leaves the queue refusing commands.
    let mut wrong = HostAuth::new(HOSTNQN, NQN, other_secret(), None, 13);
    send(&mut admin, &wrong.negotiate());
    let challenge = receive(&mut admin).encode();
    send(&mut admin, &wrong.reply(&challenge).unwrap());
    expect_failure1(&mut admin, FailureReason::Failed);
    assert_auth_required(
        &identify(&mut admin),
        "Identify after a failed re-authentication",
    );
}

#[test]
fn raw_bad_messages_get_their_failure_reason() {
    let t = Target::start("dhchap-host-bad");

    // A Reply replayed from an earlier transaction: the new challenge does not match it.
    let mut first = admin_queue(t.port);
    let old_reply = authenticate(&mut first, &mut raw_host(20));
    let mut h = admin_queue(t.port);
    let txn = raw_host(20);
    send(&mut h, &txn.negotiate());
    let _challenge = receive(&mut h);
    send(&mut h, &old_reply);
    expect_failure1(&mut h, FailureReason::Failed);
    assert_auth_required(&identify(&mut h), "after a replayed Reply");

    // A truncated Reply.
    let mut h = admin_queue(t.port);
    let mut txn = raw_host(21);
    send(&mut h, &txn.negotiate());
    let reply = txn.reply(&receive(&mut h).encode()).unwrap();
    send(&mut h, &reply[..20]);
    expect_failure1(&mut h, FailureReason::IncorrectPayload);
    assert_auth_required(&identify(&mut h), "after a truncated Reply");

    // A Reply under another transaction id.
    let mut h = admin_queue(t.port);
    let mut txn = raw_host(22);
    send(&mut h, &txn.negotiate());
    let challenge = receive(&mut h).encode();
    txn.tid = 23;
    send(&mut h, &txn.reply(&challenge).unwrap());
    expect_failure1(&mut h, FailureReason::IncorrectPayload);
    assert_auth_required(&identify(&mut h), "after a wrong T_ID");

    // Only hashes and groups the controller does not know.
    for (hashes, dhgroups, want) in [
        (vec![9u8], vec![0u8], FailureReason::HashUnusable),
        (vec![1], vec![9], FailureReason::DhGroupUnusable),
    ] {
        let mut h = admin_queue(t.port);
        let negotiate = Message::Negotiate {
            tid: 24,
            sc_c: 0,
            hashes,
            dhgroups,
        };
        send(&mut h, &negotiate.encode());
        expect_failure1(&mut h, want);
        assert_auth_required(&identify(&mut h), "after an unusable negotiation");
    }

    // A Success2 before any Negotiate: a message out of sequence.
    let mut h = admin_queue(t.port);
    send(&mut h, &Message::Success2 { tid: 0 }.encode());
    expect_failure1(&mut h, FailureReason::IncorrectProtocolMessage);
    assert_auth_required(&identify(&mut h), "after an out-of-sequence message");
}

/// Runs a re-authentication with `secret` on an authenticated raw queue; returns the
/// controller's last message.
fn reauthenticate(h: &mut Host, secret: DhchapSecret, tid: u16) -> Message {
    let mut txn = HostAuth::new(HOSTNQN, NQN, secret, None, tid);
    send(h, &txn.negotiate());
    let challenge = receive(h);
    if let Message::Failure1 { .. } = challenge {
        return challenge;
    }
    send(h, &txn.reply(&challenge.encode()).unwrap());
    receive(h)
}

/// As SPDK: each transaction takes the host's keys as the subsystem holds them then, so
/// `nvmf_subsystem_set_keys` applies to the next re-authentication of a connected
/// controller, and a key removed from the keyring fails it.
#[test]
fn set_keys_and_key_removal_apply_to_connected_controllers() {
    let t = Target::start("dhchap-host-keys");
    let mut h = admin_queue(t.port);
    authenticate(&mut h, &mut raw_host(30));
    let rpc = |m: &str, p| common::nvme::call(&t.app, m, p);
    rpc(
        "nvmf_subsystem_set_keys",
        json!({"nqn": NQN, "host": HOSTNQN, "dhchap_key": "ck"}),
    )
    .unwrap();
    assert!(matches!(
        reauthenticate(&mut h, host_secret(), 31),
        Message::Failure1 {
            reason: FailureReason::Failed,
            ..
        }
    ));
    assert_auth_required(
        &identify(&mut h),
        "after re-authenticating with the old key",
    );
    assert!(matches!(
        reauthenticate(&mut h, ctrl_secret(), 32),
        Message::Success1 { .. }
    ));
    assert!(!matches!(
        identify(&mut h).cqe.status(),
        s if s == Status::AUTHENTICATION_REQUIRED.with_dnr()
    ));
    rpc("keyring_file_remove_key", json!({"name": "ck"})).unwrap();
    assert!(matches!(
        reauthenticate(&mut h, ctrl_secret(), 33),
        Message::Failure1 {
            reason: FailureReason::Failed,
            ..
        }
    ));
    assert_auth_required(&identify(&mut h), "after the key was removed");

    // A key file that does not hold a DHHC-1 secret is refused when a host names it.
    let bad = t.dir.join("bad");
    std::fs::write(&bad, "not a secret").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    rpc(
        "keyring_file_add_key",
        json!({"name": "bad", "path": bad.display().to_string()}),
    )
    .unwrap();
    let e = rpc(
        "nvmf_subsystem_set_keys",
        json!({"nqn": NQN, "host": HOSTNQN, "dhchap_key": "bad"}),
    )
    .unwrap_err();
    assert!(e["message"].as_str().unwrap().contains("dhchap_key"), "{e}");
}

/// pollux-perf authenticates every queue with nvme-cli's flags, and a wrong secret ends the
/// run with the reason.
#[test]
fn perf_authenticates_with_nvme_cli_flags() {
    let t = Target::start("dhchap-host-perf");
    let trid = format!(
        "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{} subnqn:{NQN} hostnqn:{HOST_BOTH_WAYS}",
        t.port
    );
    let perf = |secret: &str, extra: &[&str]| {
        let mut args = vec![
            "-r",
            &trid,
            "-q",
            "4",
            "-o",
            "4096",
            "-w",
            "randread",
            "-t",
            "1",
            "--no-pin",
            "-P",
            "2",
            "--dhchap-secret",
            secret,
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_pollux-perf"))
            .args(args)
            .output()
            .unwrap()
    };
    let good = host_secret().format();
    let ctrl = ctrl_secret().format();
    let out = perf(
        &good,
        &[
            "--dhchap-ctrl-secret",
            &ctrl,
            "--dhchap-digests",
            "sha384",
            "--dhchap-dhgroups",
            "ffdhe2048",
            "--json",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(v["total"]["ios"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["total"]["errors"], 0, "{v}");

    let out = perf(&other_secret().format(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("DH-HMAC-CHAP authentication failed"),
        "{stderr}"
    );
    let out = perf("DHHC-1:01:nonsense:", &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret"));
}
