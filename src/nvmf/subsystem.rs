//! NVMe-oF subsystems as the target sees them.
//!
//! NVMe-oF subsystems as the target sees them: a [`Subsystem`] is the immutable description
//! of one subsystem (NQN, type, serial and model numbers, allowed hosts, listeners,
//! namespaces, controller id range) plus its [`Directory`] of live controllers. The main
//! reactor owns the editable list (see `target.rs`) and publishes immutable snapshots
//! (`Arc<Subsystem>`) to every reactor; a poll group reads only its snapshot. A change
//! copies only the subsystem it changes (its namespaces are a persistent map, so even that
//! copy shares every unchanged namespace); every other subsystem's `Arc` is shared by the
//! old and the new snapshot. Cost per object, shared by all reactors (one copy in the
//! process, not one per reactor): a namespace ~150 B in its subsystem's map plus the bdev
//! handle it points to; a subsystem ~400 B plus its NQN, hosts and listeners. The directory
//! is the one piece shared between reactors: it allocates controller ids and lets an I/O
//! queue Connect on any reactor find its controller (hostnqn, hostid, granted queues, queue
//! ids in use). It is touched only on Connect, queue teardown and the inspection RPCs, never
//! on the I/O path, so a short `Mutex` is the simplest correct tool there.

use super::wire::{self, DiscoveryLogEntry, DISCOVERY_NQN};
use crate::bdev::BdevHandle;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// A subsystem's namespaces by nsid: a persistent ordered map (cloned in O(1), an insert or
/// removal copies O(log n) nodes), so that a snapshot with one namespace more shares the
/// others with the previous one.
pub type Namespaces = imbl::OrdMap<u32, Namespace>;
use std::sync::{Arc, Mutex, MutexGuard};

/// Subsystem type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubType {
    Discovery,
    Nvme,
}

/// A transport address (SPDK's `listen_address`): trtype, adrfam, traddr, trsvcid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenAddr {
    pub trtype: String,
    pub adrfam: String,
    pub traddr: String,
    pub trsvcid: String,
}

impl ListenAddr {
    pub fn tcp(traddr: &str, port: u16) -> Self {
        Self {
            trtype: "TCP".into(),
            adrfam: if traddr.contains(':') { "IPv6" } else { "IPv4" }.into(),
            traddr: traddr.into(),
            trsvcid: port.to_string(),
        }
    }

    /// Same endpoint (transport, address, port), whatever the spelling of trtype/adrfam.
    pub fn same_endpoint(&self, other: &ListenAddr) -> bool {
        self.trtype.eq_ignore_ascii_case(&other.trtype)
            && self.traddr == other.traddr
            && self.trsvcid == other.trsvcid
    }

    pub fn to_json(&self) -> Value {
        json!({
            "trtype": self.trtype,
            "adrfam": self.adrfam,
            "traddr": self.traddr,
            "trsvcid": self.trsvcid,
        })
    }

    fn discovery_entry(&self, subnqn: &str, subtype: u8, portid: u16) -> DiscoveryLogEntry {
        let mut e = DiscoveryLogEntry {
            trtype: wire::trtype::TCP,
            adrfam: if self.adrfam.eq_ignore_ascii_case("ipv6") {
                wire::adrfam::IPV6
            } else {
                wire::adrfam::IPV4
            },
            subtype,
            treq: wire::treq::SECURE_CHANNEL_NOT_REQUIRED,
            portid: portid.into(),
            cntlid: wire::CNTLID_DYNAMIC.into(),
            asqsz: 32.into(),
            ..Default::default()
        };
        e.trsvcid = super::nul_field(&self.trsvcid);
        e.subnqn = super::nul_field(subnqn);
        e.traddr = super::nul_field(&self.traddr);
        e
    }
}

/// A namespace: an nsid mapped to a bdev, with its identifiers.
#[derive(Clone)]
pub struct Namespace {
    pub nsid: u32,
    pub bdev: BdevHandle,
    pub nguid: [u8; 16],
    pub eui64: [u8; 8],
    pub uuid: [u8; 16],
    /// The bdev's block count when this view was made: a change (bdev resize) is a
    /// namespace attribute change the hosts are told about.
    pub size_blocks: u64,
    /// Which hosts see the namespace: `None` every allowed host; `Some` only the listed
    /// ones (created with `no_auto_visible`, hosts added by `nvmf_ns_add_host`).
    pub visible_hosts: Option<Arc<BTreeSet<String>>>,
    /// The ANA group (its nsid unless set otherwise; meaningful with `ana_reporting`).
    pub anagrpid: u32,
    /// Its reservations (changed on the main reactor only, see `reservation_target.rs`).
    pub reservations: Arc<super::reservation::Reservations>,
    /// The Persist Through Power Loss file (`ptpl_file` of `nvmf_subsystem_add_ns`).
    pub ptpl_file: Option<Arc<str>>,
}

impl Namespace {
    /// Adds `nguid` and `eui64` to a namespace's JSON when they are set, as SPDK writes them
    /// (upper-case hex; an all-zero identifier is not set and is left out).
    pub fn put_ids(&self, out: &mut Value) {
        if self.nguid != [0; 16] {
            out["nguid"] = json!(hex(&self.nguid));
        }
        if self.eui64 != [0; 8] {
            out["eui64"] = json!(hex(&self.eui64));
        }
    }

    /// Whether the host `hostnqn` sees this namespace (it is active for its controllers).
    pub fn visible_to(&self, hostnqn: &str) -> bool {
        self.visible_hosts
            .as_ref()
            .is_none_or(|hosts| hosts.contains(hostnqn))
    }
}

/// The namespaces of `s` the host `hostnqn` sees.
pub fn visible_nsids<'a>(s: &'a Subsystem, hostnqn: &'a str) -> impl Iterator<Item = u32> + 'a {
    s.namespaces
        .values()
        .filter(move |ns| ns.visible_to(hostnqn))
        .map(|ns| ns.nsid)
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("nsid", &self.nsid)
            .field("bdev", &self.bdev.name())
            .finish()
    }
}

/// Where a queue pair lives: its reactor, its slot in that reactor's poll group and the
/// generation that slot had when the queue was created (slots are reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpairRef {
    pub core: u32,
    pub index: usize,
    pub gen: u64,
}

/// A live controller, as other reactors and the RPCs need to see it.
#[derive(Debug, Clone)]
pub struct CtrlrEntry {
    pub admin: QpairRef,
    pub hostnqn: String,
    pub hostid: [u8; 16],
    /// I/O queues the host may create (the Number of Queues feature, or the transport's
    /// limit until the host sets it).
    pub max_io_queues: u16,
    /// CC.EN is set: I/O queues may connect.
    pub enabled: bool,
    pub io_qpairs: BTreeMap<u16, QpairRef>,
    pub peer: String,
    pub listen: ListenAddr,
}

/// The live controllers of one subsystem.
#[derive(Debug, Default)]
pub struct Directory {
    inner: Mutex<BTreeMap<u16, CtrlrEntry>>,
}

impl Directory {
    pub fn lock(&self) -> MutexGuard<'_, BTreeMap<u16, CtrlrEntry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Allocates the lowest free controller id in `min..=max` for `entry`.
    pub fn allocate(&self, min: u16, max: u16, entry: CtrlrEntry) -> Option<u16> {
        let mut d = self.lock();
        let id = (min..=max).find(|id| !d.contains_key(id))?;
        d.insert(id, entry);
        Some(id)
    }

    pub fn remove(&self, cntlid: u16) -> Option<CtrlrEntry> {
        self.lock().remove(&cntlid)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The DH-HMAC-CHAP keys a host authenticates with: `key` proves the host to the
/// controller; `ctrlr_key`, when set, makes the authentication bidirectional. The secrets
/// were read from the key files on the main reactor when the keys were named (add_host,
/// set_keys): the poll groups use these copies and never read a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeys {
    pub key: crate::keyring::KeyInfo,
    pub ctrlr_key: Option<crate::keyring::KeyInfo>,
    pub secret: crate::nvmf::secret::DhchapSecret,
    pub ctrlr_secret: Option<crate::nvmf::secret::DhchapSecret>,
}

/// The TLS PSK of an allowed host: the keyring key it was read from (saved configs name it)
/// and the parsed PSK (kept in memory so a handshake reads no file).
#[derive(Debug, Clone)]
pub struct HostPsk {
    pub key: crate::keyring::KeyInfo,
    pub psk: Arc<crate::nvmf::psk::ConfiguredPsk>,
}

/// One subsystem (immutable snapshot; the main reactor edits a copy and republishes).
#[derive(Debug, Clone)]
pub struct Subsystem {
    /// Unique for the lifetime of the application (namespaces channels are keyed by it).
    pub id: u64,
    pub nqn: String,
    pub subtype: SubType,
    pub serial_number: String,
    pub model_number: String,
    pub allow_any_host: bool,
    pub hosts: Vec<String>,
    /// DH-HMAC-CHAP keys of allowed hosts (by host NQN); a host listed here must
    /// authenticate on every queue. Names and paths only: the secret is read from the file
    /// when a queue authenticates.
    pub host_keys: BTreeMap<String, HostKeys>,
    /// TLS PSKs of allowed hosts (by host NQN): such a host must connect over TLS.
    pub host_psks: BTreeMap<String, HostPsk>,
    pub listeners: Vec<ListenAddr>,
    pub namespaces: Namespaces,
    /// 0 = unlimited (SPDK's default); nsids are then limited to `MAX_NSID`.
    pub max_namespaces: u32,
    pub min_cntlid: u16,
    pub max_cntlid: u16,
    pub ana_reporting: bool,
    /// ANA states of the listeners (see `ana.rs`).
    pub ana: super::ana::SubsystemAna,
    pub directory: Arc<Directory>,
}

/// The highest nsid of a subsystem without `max_namespaces` (Identify NN).
pub const MAX_NSID: u32 = 1024;
/// SPDK's default model number.
pub const DEFAULT_MODEL: &str = "pollux bdev Controller";
/// The default serial number.
pub const DEFAULT_SERIAL: &str = "00000000000000000000";

impl Subsystem {
    pub fn new(id: u64, nqn: &str, subtype: SubType) -> Self {
        Self {
            id,
            nqn: nqn.into(),
            subtype,
            serial_number: DEFAULT_SERIAL.into(),
            model_number: DEFAULT_MODEL.into(),
            allow_any_host: subtype == SubType::Discovery,
            hosts: Vec::new(),
            host_keys: BTreeMap::new(),
            host_psks: BTreeMap::new(),
            listeners: Vec::new(),
            namespaces: Namespaces::new(),
            max_namespaces: 0,
            min_cntlid: 1,
            max_cntlid: 0xffef,
            ana_reporting: false,
            ana: Default::default(),
            directory: Arc::new(Directory::default()),
        }
    }

    pub fn is_discovery(&self) -> bool {
        self.subtype == SubType::Discovery
    }

    /// Identify NN: the largest nsid the subsystem may hold.
    pub fn max_nsid(&self) -> u32 {
        if self.max_namespaces == 0 {
            MAX_NSID
        } else {
            self.max_namespaces
        }
    }

    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        self.is_discovery() || self.allow_any_host || self.hosts.iter().any(|h| h == hostnqn)
    }

    /// A host as `nvmf_get_subsystems` and the saved config show it: its NQN and, when it
    /// must authenticate, the names of its keys (SPDK's `dhchap_key`, `dhchap_ctrlr_key`).
    pub fn host_json(&self, hostnqn: &str) -> Value {
        let mut v = json!({ "nqn": hostnqn });
        if let Some(p) = self.host_psks.get(hostnqn) {
            v["psk"] = json!(p.key.name);
        }
        if let Some(keys) = self.host_keys.get(hostnqn) {
            v["dhchap_key"] = json!(keys.key.name);
            if let Some(c) = &keys.ctrlr_key {
                v["dhchap_ctrlr_key"] = json!(c.name);
            }
        }
        v
    }

    pub fn has_listener(&self, addr: &ListenAddr) -> bool {
        self.listeners.iter().any(|l| l.same_endpoint(addr))
    }

    /// SPDK's `nvmf_get_subsystems` entry.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "nqn": self.nqn,
            "subtype": if self.is_discovery() { "Discovery" } else { "NVMe" },
            "listen_addresses": self.listeners.iter().map(ListenAddr::to_json).collect::<Vec<_>>(),
            "allow_any_host": self.allow_any_host,
            "hosts": self.hosts.iter().map(|h| self.host_json(h)).collect::<Vec<_>>(),
        });
        if !self.is_discovery() {
            v["serial_number"] = json!(self.serial_number);
            v["model_number"] = json!(self.model_number);
            v["max_namespaces"] = json!(self.max_namespaces);
            v["min_cntlid"] = json!(self.min_cntlid);
            v["max_cntlid"] = json!(self.max_cntlid);
            v["namespaces"] = self
                .namespaces
                .values()
                .map(|ns| {
                    let mut n = json!({
                        "nsid": ns.nsid,
                        "bdev_name": ns.bdev.name(),
                        "name": ns.bdev.name(),
                        "uuid": format_uuid(&ns.uuid),
                        "no_auto_visible": ns.visible_hosts.is_some(),
                        "hosts": ns.visible_hosts.iter().flat_map(|h| h.iter())
                            .map(|h| json!({"nqn": h})).collect::<Vec<_>>(),
                    });
                    ns.put_ids(&mut n);
                    if self.ana_reporting {
                        n["anagrpid"] = json!(ns.anagrpid);
                    }
                    n
                })
                .collect();
            v["ana_reporting"] = json!(self.ana_reporting);
        }
        v
    }
}

/// The discovery log entries a host may see: every listener of every NVMe subsystem that
/// allows it (ports numbered by listener order).
pub fn discovery_entries<'a>(
    subsystems: impl IntoIterator<Item = &'a Arc<Subsystem>>,
    hostnqn: &str,
) -> Vec<DiscoveryLogEntry> {
    let mut ports: Vec<&ListenAddr> = Vec::new();
    let mut out = Vec::new();
    for s in subsystems.into_iter().filter(|s| !s.is_discovery()) {
        if !s.host_allowed(hostnqn) {
            continue;
        }
        for l in &s.listeners {
            let portid = match ports.iter().position(|p| p.same_endpoint(l)) {
                Some(i) => i,
                None => {
                    ports.push(l);
                    ports.len() - 1
                }
            };
            out.push(l.discovery_entry(&s.nqn, wire::subtype::NVME, portid as u16));
        }
    }
    out
}

/// Upper-case hex of bytes, as SPDK prints an NGUID or EUI-64.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// Parses hex of exactly `N` bytes (dashes allowed, as SPDK's rpc.py sends UUID-like
/// NGUIDs).
pub fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits: Vec<u8> = s.bytes().filter(|c| *c != b'-').collect();
    if digits.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// 8-4-4-4-12 text of 16 bytes.
pub fn format_uuid(b: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*b).to_string()
}

/// Validates an NQN as SPDK does: 11..=223 bytes, `nqn.` prefix (or the UUID form).
pub fn valid_nqn(nqn: &str) -> Result<(), String> {
    if nqn.len() > wire::NQN_MAX_LEN {
        return Err(format!(
            "nqn: {} bytes is longer than {}",
            nqn.len(),
            wire::NQN_MAX_LEN
        ));
    }
    if nqn == DISCOVERY_NQN {
        return Ok(());
    }
    let Some(rest) = nqn.strip_prefix("nqn.") else {
        return Err(format!("nqn: {nqn} does not start with \"nqn.\""));
    };
    if rest.starts_with("2014-08.org.nvmexpress:uuid:") {
        return Ok(());
    }
    // nqn.yyyy-mm.reverse-domain[:anything]
    let date_ok = rest.len() > 8
        && rest.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && rest.as_bytes()[4] == b'-'
        && rest.as_bytes()[5..7].iter().all(u8::is_ascii_digit)
        && rest.as_bytes()[7] == b'.';
    if !date_ok {
        return Err(format!(
            "nqn: {nqn} is not of the form nqn.yyyy-mm.reverse.domain[:name]"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nqn_validation_and_hex_helpers() {
        assert!(valid_nqn("nqn.2016-06.io.spdk:cnode1").is_ok());
        assert!(valid_nqn(DISCOVERY_NQN).is_ok());
        assert!(valid_nqn("iqn.2016-06.io.spdk:cnode1").is_err());
        assert!(valid_nqn("nqn.16-06.io").is_err());
        assert!(valid_nqn(&format!("nqn.2016-06.io:{}", "x".repeat(300))).is_err());
        let g: [u8; 4] = parse_hex("0a0B-ff01").unwrap();
        assert_eq!(g, [0x0a, 0x0b, 0xff, 0x01]);
        assert!(parse_hex::<4>("0a0b0c").is_none());
        assert!(parse_hex::<2>("zz00").is_none());
        let u = [0x11u8; 16];
        assert_eq!(format_uuid(&u), "11111111-1111-1111-1111-111111111111");
    }

    #[test]
    fn discovery_lists_listeners_of_allowed_subsystems_only() {
        let mut a = Subsystem::new(1, "nqn.2016-06.io.pollux:a", SubType::Nvme);
        a.allow_any_host = true;
        a.listeners.push(ListenAddr::tcp("127.0.0.1", 4420));
        let mut b = Subsystem::new(2, "nqn.2016-06.io.pollux:b", SubType::Nvme);
        b.hosts.push("nqn.host:1".into());
        b.listeners.push(ListenAddr::tcp("127.0.0.1", 4420));
        b.listeners.push(ListenAddr::tcp("127.0.0.1", 4421));
        let subs = vec![Arc::new(a), Arc::new(b)];
        assert_eq!(discovery_entries(&subs, "nqn.host:2").len(), 1);
        let e = discovery_entries(&subs, "nqn.host:1");
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].portid, 0);
        assert_eq!(e[2].portid, 1);
        assert_eq!(crate::nvmf::field_str(&e[2].trsvcid), Some("4421"));
    }
}
