//! The NVMe-oF target registry on the main reactor and its snapshots pushed to every reactor.
//!
//! The NVMe-oF target registry, on the main reactor: the TCP transport options, the
//! subsystems (the discovery subsystem first), and one acceptor per listen address. The
//! registry *is* a [`TargetView`] made of persistent maps (subsystems by id, an NQN index,
//! listener counts; each subsystem's namespaces too), edited in place: a change copies only
//! the subsystem it touches (`Arc::make_mut`) and the O(log n) map nodes above it, and
//! records its id. `publish` pushes an O(1) clone of the view, naming the subsystems changed
//! since the previous one, to every reactor with `for_each_reactor`; each poll group
//! (`tcp/view.rs`) re-syncs only those: its namespace channels (open only while an I/O queue
//! of the subsystem is there), namespace-change AENs, and the queues a change invalidates
//! (deleted subsystem, removed listener or host) — SPDK's pause/update/resume of every poll
//! group, done by message, at the cost of what changed. Lookups: by NQN O(1), by id
//! O(log n), "does any subsystem listen here" O(1). The RPC layer (`rpc.rs`) calls the
//! operations here and answers once the view reached every reactor. Acceptors accept on the
//! main reactor and hand each new socket to the next reactor round-robin.
//!
//! To extend a subsystem (per-listener or per-namespace state, e.g. ANA): add the field to
//! `Subsystem`/`Namespace` and change it through `Target::subsystem_mut` (which marks the
//! subsystem changed); a reactor sees the new snapshot of that subsystem in its next view.
//!
//! Files: `target/transport.rs` (the transport's options), `target/view.rs` (the
//! `TargetView` snapshot); the registry, listeners and acceptors are here.

mod transport;
mod view;

use super::ana::AnaState;
use super::referral::Referral;
use super::subsystem::{HostKeys, ListenAddr, Namespace, SubType, Subsystem};
use super::tcp;
use crate::bdev::{self, BdevEvent};
use crate::reactor::{self, PollStatus, PollerHandle, WakeSource};
use crate::sock::{self, Listener, SockOpts};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

pub use transport::TransportOpts;
pub use view::{DhchapPolicy, SubsystemMap, TargetView, DHGROUP_NAMES};

/// Period of a listener's accept poller while its reactor is busy. Polled on every reactor
/// loop, an idle listener cost one failed accept4 per loop (as many syscalls as the I/O path
/// itself at QD32); a busy reactor accepts new connections within this time, like SPDK's
/// acceptor (10 ms). The poller is wake-driven: a connection arriving wakes a sleeping
/// reactor through the listener's wake source and is accepted at once, so an idle reactor
/// does not wake at this period (it did: with a posix and a uring listener an idle target
/// woke ~117 times a second and used ~1 % of a core on this project's VMs; now ~20, for the
/// transport's 50 ms timer).
const ACCEPT_POLL_US: u64 = 10_000;

/// A listening socket with its accept poller (main reactor).
struct Acceptor {
    addr: ListenAddr,
    impl_name: &'static str,
    poller: PollerHandle,
    _wake: Option<WakeSource>,
}

/// The registry (main reactor only).
pub struct Target {
    /// The state every reactor gets (persistent maps; a publication clones it in O(1)).
    view: TargetView,
    /// Subsystems changed since the last publication, and whether a listener came or went.
    dirty: Vec<u64>,
    listeners_dirty: bool,
    /// Subsystems changed since the listener index last saw them, and the listeners it
    /// counted for each (see `reindex`).
    unindexed: Vec<u64>,
    indexed_listeners: HashMap<u64, Vec<ListenAddr>>,
    next_id: u64,
    acceptors: Vec<Acceptor>,
    /// Most NVMe subsystems (`nvmf_set_max_subsystems`, SPDK's default 1024).
    max_subsystems: u32,
    /// The main reactor's descriptor of each namespace's bdev (hot remove events).
    descs: HashMap<(u64, u32), bdev::Desc>,
    rr: Rc<Cell<usize>>,
}

thread_local! {
    static TARGET: RefCell<Option<Target>> = const { RefCell::new(None) };
}

/// Runs `f` on the registry (created on first use, main reactor only).
pub fn with_target<R>(f: impl FnOnce(&mut Target) -> R) -> R {
    TARGET.with(|t| {
        let mut t = t.borrow_mut();
        let t = t.get_or_insert_with(|| {
            let mut discovery = Subsystem::new(0, super::wire::DISCOVERY_NQN, SubType::Discovery);
            discovery.allow_any_host = true;
            Target {
                view: TargetView::build(0, None, [Arc::new(discovery)]),
                dirty: Vec::new(),
                listeners_dirty: false,
                unindexed: Vec::new(),
                indexed_listeners: HashMap::new(),
                next_id: 1,
                acceptors: Vec::new(),
                max_subsystems: DEFAULT_MAX_SUBSYSTEMS,
                descs: HashMap::new(),
                rr: Rc::new(Cell::new(0)),
            }
        });
        f(t)
    })
}

/// A new namespace's identifiers as given (`None`: zeroes, or the bdev's UUID).
#[derive(Debug, Clone, Copy, Default)]
pub struct NsIds {
    pub nguid: Option<[u8; 16]>,
    pub eui64: Option<[u8; 8]>,
    pub uuid: Option<[u8; 16]>,
    /// The ANA group (`None`: the nsid).
    pub anagrpid: Option<u32>,
}

/// SPDK's default bound on the number of NVMe subsystems.
pub const DEFAULT_MAX_SUBSYSTEMS: u32 = 1024;

impl Target {
    /// Most NVMe subsystems the target accepts.
    pub fn max_subsystems(&self) -> u32 {
        self.max_subsystems
    }

    /// Sets the bound (before any subsystem exists: STARTUP state).
    pub fn set_max_subsystems(&mut self, max: u32) -> Result<(), String> {
        if max == 0 {
            return Err("max_subsystems: must be at least 1".into());
        }
        self.max_subsystems = max;
        Ok(())
    }
}

/// Publishes the current view to every reactor (an O(1) clone of the registry's persistent
/// maps, with the list of subsystems changed since the previous publication); `done` runs
/// on the main reactor once all of them applied it. Each reactor's work is proportional to
/// what changed (see `tcp/view.rs`).
pub fn publish(done: impl FnOnce() + Send + 'static) {
    let view = Arc::new(with_target(Target::snapshot));
    reactor::for_each_reactor(move || tcp::apply_view(view.clone()), done);
}

/// The subsystems of the registry, in creation order (`Target::subsystems`).
pub struct Subsystems<'a>(&'a SubsystemMap);

impl<'a> Subsystems<'a> {
    pub fn iter(&self) -> impl Iterator<Item = &'a Subsystem> + 'a {
        self.0.values().map(|s| s.as_ref())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Target {
    /// The next version of the view, carrying the changes made since the previous one.
    pub fn snapshot(&mut self) -> TargetView {
        self.reindex();
        self.view.version += 1;
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        self.view.changed = dirty.into();
        self.view.listeners_changed = std::mem::take(&mut self.listeners_dirty);
        self.view.clone()
    }

    /// The registry's state as it would be published now (tests compare it with a view
    /// built from scratch, and with a reactor's).
    /// `nvmf_set_config`'s DH-HMAC-CHAP lists; they apply from the next transaction.
    pub fn set_dhchap_policy(&mut self, policy: DhchapPolicy) {
        self.view.dhchap = Arc::new(policy);
    }

    pub fn view(&self) -> &TargetView {
        &self.view
    }

    pub fn transport(&self) -> Option<&TransportOpts> {
        self.view.transport.as_ref()
    }

    pub fn subsystems(&self) -> Subsystems<'_> {
        Subsystems(&self.view.subsystems)
    }

    /// Subsystem by NQN: O(1).
    pub fn subsystem(&self, nqn: &str) -> Option<&Subsystem> {
        self.view.by_nqn(nqn).map(|s| s.as_ref())
    }

    /// The subsystem named `nqn`, to change (any field but its NQN and id): marks it changed
    /// for the next publication and copies it only if a published view still shares it.
    fn subsystem_mut(&mut self, nqn: &str) -> Result<&mut Subsystem, String> {
        let id = *self
            .view
            .by_nqn
            .get(nqn)
            .ok_or_else(|| format!("Unable to find subsystem with NQN {nqn}"))?;
        self.dirty.push(id);
        self.unindexed.push(id);
        let s = self
            .view
            .subsystems
            .get_mut(&id)
            .ok_or_else(|| format!("Unable to find subsystem with NQN {nqn}"))?;
        Ok(Arc::make_mut(s))
    }

    /// Applies `f` to subsystem `id` (by id: hot remove and resize events), marking it
    /// changed.
    fn subsystem_by_id_mut(&mut self, id: u64) -> Option<&mut Subsystem> {
        let s = self.view.subsystems.get_mut(&id)?;
        self.dirty.push(id);
        self.unindexed.push(id);
        Some(Arc::make_mut(s))
    }

    /// Brings the listener index (endpoint → subsystems listening) in step with the
    /// subsystems changed since it last ran: O(listeners of those subsystems).
    fn reindex(&mut self) {
        for id in std::mem::take(&mut self.unindexed) {
            let old = self.indexed_listeners.remove(&id).unwrap_or_default();
            let new = self
                .view
                .subsystem(id)
                .map(|s| s.listeners.clone())
                .unwrap_or_default();
            if old != new {
                self.listeners_dirty = true;
                self.view.count_listeners(&old, -1);
                self.view.count_listeners(&new, 1);
            }
            if !new.is_empty() {
                self.indexed_listeners.insert(id, new);
            }
        }
    }

    /// The NVMe subsystem `nqn` to edit (the caller publishes the change).
    pub(super) fn nvme_subsystem_mut(&mut self, nqn: &str) -> Result<&mut Subsystem, String> {
        let s = self.subsystem_mut(nqn)?;
        if s.is_discovery() {
            return Err(format!("{nqn} is the discovery subsystem"));
        }
        Ok(s)
    }

    pub fn create_transport(&mut self, opts: TransportOpts) -> Result<(), String> {
        if self.view.transport.is_some() {
            return Err("Transport type 'TCP' already exists".into());
        }
        opts.validate()?;
        self.view.transport = Some(opts);
        Ok(())
    }

    pub fn create_subsystem(&mut self, mut sub: Subsystem) -> Result<(), String> {
        if self.subsystem(&sub.nqn).is_some() {
            return Err(format!("Unable to create subsystem {}: it exists", sub.nqn));
        }
        let discovery = self.view.by_nqn(super::wire::DISCOVERY_NQN).is_some() as usize;
        let existing = self.view.subsystems.len() - discovery;
        if existing >= self.max_subsystems as usize {
            return Err(format!(
                "Unable to create subsystem {}: the target holds its maximum of {} \
                 (nvmf_set_max_subsystems)",
                sub.nqn, self.max_subsystems
            ));
        }
        if sub.min_cntlid == 0 || sub.min_cntlid > sub.max_cntlid || sub.max_cntlid > 0xffef {
            return Err(format!(
                "min_cntlid/max_cntlid: {}..{} is not a range within 1..=65519",
                sub.min_cntlid, sub.max_cntlid
            ));
        }
        sub.id = self.next_id;
        self.next_id += 1;
        self.dirty.push(sub.id);
        self.unindexed.push(sub.id);
        self.view.insert(Arc::new(sub));
        self.view.genctr += 1;
        Ok(())
    }

    /// Deletes a subsystem. The discovery subsystem may be deleted too (as in SPDK): its
    /// listeners close, and Connects to the discovery NQN are refused until it is created
    /// again.
    pub fn delete_subsystem(&mut self, nqn: &str) -> Result<(), String> {
        let id = self.subsystem_mut(nqn)?.id;
        if let Some(old) = self.view.remove(id) {
            for nsid in old.namespaces.keys() {
                self.descs.remove(&(id, *nsid));
            }
        }
        self.view.genctr += 1;
        self.prune_acceptors();
        Ok(())
    }

    /// The socket implementation of the socket listening at `addr` (saved configs name it).
    pub fn listener_sock_impl(&self, addr: &ListenAddr) -> Option<&'static str> {
        self.acceptors
            .iter()
            .find(|a| a.addr.same_endpoint(addr))
            .map(|a| a.impl_name)
    }

    /// Adds a listener (opening the socket if no subsystem listens there yet) and returns
    /// the address as bound (a port of 0 becomes the port the kernel chose). Every ANA
    /// group is in `ana_state` through it.
    pub fn add_listener(
        &mut self,
        nqn: &str,
        mut addr: ListenAddr,
        sock_impl: Option<&str>,
        ana_state: AnaState,
    ) -> Result<ListenAddr, String> {
        if self.view.transport.is_none() {
            return Err(
                "Unable to find TCP transport: create it with nvmf_create_transport first".into(),
            );
        }
        if !addr.trtype.eq_ignore_ascii_case("tcp") {
            return Err(format!(
                "listen_address.trtype: {} is not supported (only TCP)",
                addr.trtype
            ));
        }
        addr.trtype = "TCP".into();
        let port: u16 = addr.trsvcid.parse().map_err(|_| {
            format!(
                "listen_address.trsvcid: {} is not a port number",
                addr.trsvcid
            )
        })?;
        self.subsystem_mut(nqn)?;
        let existing = self.acceptors.iter().find(|a| {
            a.addr.traddr == addr.traddr && (port != 0 && a.addr.trsvcid == addr.trsvcid)
        });
        let bound = match existing {
            Some(a) => {
                if let Some(name) = sock_impl {
                    if name != a.impl_name {
                        return Err(format!(
                            "sock_impl: {name} differs from the {} socket already listening there",
                            a.impl_name
                        ));
                    }
                }
                a.addr.clone()
            }
            None => self.open_acceptor(addr.clone(), port, sock_impl)?,
        };
        let s = self.subsystem_mut(nqn)?;
        if s.has_listener(&bound) {
            return Err(format!(
                "Listener {}:{} already exists for {nqn}",
                bound.traddr, bound.trsvcid
            ));
        }
        s.listeners.push(ListenAddr {
            adrfam: addr.adrfam.clone(),
            ..bound.clone()
        });
        s.ana.add_listener(&bound, ana_state);
        self.view.genctr += 1;
        Ok(bound)
    }

    fn open_acceptor(
        &mut self,
        addr: ListenAddr,
        port: u16,
        sock_impl: Option<&str>,
    ) -> Result<ListenAddr, String> {
        let net = sock::impl_or_default(sock_impl)
            .ok_or_else(|| format!("sock_impl: {} is not known", sock_impl.unwrap_or("?")))?;
        let traddr = addr.traddr.clone();
        let opts = SockOpts {
            // A secure channel: every handshake looks its PSK up in the reactor's view.
            tls: (net.name() == "ssl").then(|| {
                crate::sock::tls::TlsOpts::Server(std::sync::Arc::new(
                    crate::nvmf::tcp::TargetPskLookup,
                ))
            }),
            ..SockOpts::default()
        };
        let listener = net
            .listen(&traddr, port, &opts)
            .map_err(|e| format!("Unable to listen on {traddr}:{port}: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("listener address: {e}"))?;
        let bound = ListenAddr {
            trsvcid: local.port().to_string(),
            ..addr
        };
        let wake = match listener.wake_fd() {
            Some(fd) => Some(reactor::add_wake_fd(fd).map_err(|e| format!("wake fd: {e}"))?),
            None => None,
        };
        let listener: Rc<RefCell<Box<dyn Listener>>> = Rc::new(RefCell::new(listener));
        let rr = self.rr.clone();
        let cores = reactor::cores();
        let listen_addr = bound.clone();
        // Every listener wakes this reactor when a connection arrives (its wake fd, registered
        // above, or its ring's eventfd): see `sock::Listener::wake_fd`.
        let poller = reactor::register_wake_driven_poller(
            format!("nvmf_tcp_accept_{}_{}", bound.traddr, bound.trsvcid),
            ACCEPT_POLL_US,
            move || accept_some(&listener, &cores, &rr, &listen_addr),
        );
        tracing::info!(traddr = %bound.traddr, trsvcid = %bound.trsvcid, sock = net.name(), "NVMe/TCP target listening");
        self.acceptors.push(Acceptor {
            addr: bound.clone(),
            impl_name: net.name(),
            poller,
            _wake: wake,
        });
        Ok(bound)
    }

    pub fn remove_listener(&mut self, nqn: &str, addr: &ListenAddr) -> Result<(), String> {
        let s = self.subsystem_mut(nqn)?;
        let before = s.listeners.len();
        s.listeners.retain(|l| !l.same_endpoint(addr));
        if s.listeners.len() == before {
            return Err(format!(
                "Unable to find listener {}:{} of {nqn}",
                addr.traddr, addr.trsvcid
            ));
        }
        s.ana.remove_listener(addr);
        self.view.genctr += 1;
        self.prune_acceptors();
        Ok(())
    }

    /// Closes listening sockets no subsystem uses any more (O(listening sockets)).
    fn prune_acceptors(&mut self) {
        self.reindex();
        let view = &self.view;
        let (keep, close): (Vec<Acceptor>, Vec<Acceptor>) = std::mem::take(&mut self.acceptors)
            .into_iter()
            .partition(|a| view.has_listener(&a.addr));
        self.acceptors = keep;
        for a in close {
            tracing::info!(traddr = %a.addr.traddr, trsvcid = %a.addr.trsvcid, "NVMe/TCP listener closed");
            a.poller.unregister();
        }
    }

    /// Adds a namespace; returns its nsid.
    pub fn add_ns(
        &mut self,
        nqn: &str,
        bdev_name: &str,
        nsid: Option<u32>,
        ids: NsIds,
        auto_visible: bool,
    ) -> Result<u32, String> {
        let NsIds {
            nguid,
            eui64,
            uuid,
            anagrpid,
        } = ids;
        let s = self.nvme_subsystem_mut(nqn)?;
        if let Some(g) = anagrpid {
            super::ana::check_group(s, "namespace.anagrpid", g)?;
        }
        let max = s.max_nsid();
        let nsid = match nsid.filter(|n| *n != 0) {
            Some(n) if n > max || n == u32::MAX => {
                return Err(format!("nsid: {n} is above the subsystem's maximum {max}"))
            }
            Some(n) if s.namespaces.contains_key(&n) => {
                return Err(format!("nsid: {n} is already in use in {nqn}"))
            }
            Some(n) => n,
            None => (1..=max)
                .find(|n| !s.namespaces.contains_key(n))
                .ok_or_else(|| format!("Unable to add namespace: {nqn} is full"))?,
        };
        let handle = bdev::lookup(bdev_name)
            .ok_or_else(|| format!("bdev_name: bdev {bdev_name} not found"))?;
        let uuid = match uuid {
            Some(u) => u,
            None => handle.info.uuid.into_bytes(),
        };
        let sid = s.id;
        let desc = bdev::open_handle(&handle, move |ev| match ev {
            BdevEvent::Remove => reactor::defer(move || hot_remove(sid, nsid)),
            BdevEvent::Resize => reactor::defer(move || ns_resized(sid, nsid)),
        })
        .map_err(|e| format!("Unable to open bdev {bdev_name}: {e}"))?;
        desc.claim("NVMe-oF Target").map_err(|e| e.to_string())?;
        let s = self.nvme_subsystem_mut(nqn)?;
        let size_blocks = handle.num_blocks();
        let anagrpid = anagrpid.unwrap_or(nsid);
        s.ana.membership_changed(anagrpid);
        s.namespaces.insert(
            nsid,
            Namespace {
                nsid,
                size_blocks,
                bdev: handle,
                nguid: nguid.unwrap_or([0; 16]),
                eui64: eui64.unwrap_or([0; 8]),
                uuid,
                visible_hosts: (!auto_visible).then(Default::default),
                anagrpid,
                reservations: Default::default(),
                ptpl_file: None,
            },
        );
        self.descs.insert((sid, nsid), desc);
        Ok(nsid)
    }

    /// Makes namespace `nsid` visible (`visible`) or invisible to `host`; only namespaces
    /// created with `no_auto_visible` have a host list.
    pub fn ns_set_host(
        &mut self,
        nqn: &str,
        nsid: u32,
        host: &str,
        visible: bool,
    ) -> Result<(), String> {
        let ns = self.nvme_ns_mut(nqn, nsid)?;
        let Some(hosts) = ns.visible_hosts.as_mut() else {
            return Err(format!(
                "nsid: namespace {nsid} is visible to every host (add it with no_auto_visible \
                 to list its hosts)"
            ));
        };
        let hosts = Arc::make_mut(hosts);
        let changed = if visible {
            hosts.insert(host.to_string())
        } else {
            hosts.remove(host)
        };
        if !changed && !visible {
            return Err(format!("host: {host} does not see namespace {nsid}"));
        }
        Ok(())
    }

    /// Namespace `nsid` of the NVMe subsystem `nqn`, to change (the caller publishes).
    fn nvme_ns_mut(&mut self, nqn: &str, nsid: u32) -> Result<&mut Namespace, String> {
        self.nvme_subsystem_mut(nqn)?
            .namespaces
            .get_mut(&nsid)
            .ok_or_else(|| format!("nsid: namespace {nsid} of {nqn} not found"))
    }

    /// Namespace `nsid` of subsystem `id`, as the registry holds it now.
    pub fn namespace(&self, id: u64, nsid: u32) -> Option<&Namespace> {
        self.view.subsystem(id)?.namespaces.get(&nsid)
    }

    /// Namespace `nsid` of subsystem `id`, to change (marks the subsystem changed).
    pub(super) fn namespace_mut(&mut self, id: u64, nsid: u32) -> Option<&mut Namespace> {
        self.view.subsystem(id)?.namespaces.get(&nsid)?;
        self.subsystem_by_id_mut(id)?.namespaces.get_mut(&nsid)
    }

    /// Gives namespace `nsid` of `nqn` a PTPL file and the reservation state restored from it.
    pub fn set_ns_ptpl(
        &mut self,
        nqn: &str,
        nsid: u32,
        file: &str,
        state: super::reservation::Reservations,
    ) -> Result<(), String> {
        let ns = self.nvme_ns_mut(nqn, nsid)?;
        ns.ptpl_file = Some(Arc::from(file));
        ns.reservations = Arc::new(state);
        Ok(())
    }

    pub fn remove_ns(&mut self, nqn: &str, nsid: u32) -> Result<(), String> {
        let s = self.nvme_subsystem_mut(nqn)?;
        let Some(ns) = s.namespaces.remove(&nsid) else {
            return Err(format!("nsid: namespace {nsid} not found in {nqn}"));
        };
        s.ana.membership_changed(ns.anagrpid);
        let id = s.id;
        self.descs.remove(&(id, nsid));
        Ok(())
    }

    pub fn add_host(
        &mut self,
        nqn: &str,
        host: &str,
        keys: Option<HostKeys>,
    ) -> Result<(), String> {
        let s = self.nvme_subsystem_mut(nqn)?;
        if s.hosts.iter().any(|h| h == host) {
            return Err(format!("host: {host} is already allowed in {nqn}"));
        }
        s.hosts.push(host.to_string());
        if let Some(keys) = keys {
            s.host_keys.insert(host.to_string(), keys);
        }
        self.view.genctr += 1;
        Ok(())
    }

    /// `nvmf_subsystem_set_keys`: replaces an allowed host's DH-HMAC-CHAP keys (`None`:
    /// the host no longer authenticates). Queues already connected keep their state; the
    /// new keys apply from the next Connect.
    pub fn set_host_keys(
        &mut self,
        nqn: &str,
        host: &str,
        keys: Option<HostKeys>,
    ) -> Result<(), String> {
        let s = self.nvme_subsystem_mut(nqn)?;
        if !s.hosts.iter().any(|h| h == host) {
            return Err(format!("host: {host} is not in the allowed list of {nqn}"));
        }
        match keys {
            Some(k) => s.host_keys.insert(host.to_string(), k),
            None => s.host_keys.remove(host),
        };
        Ok(())
    }

    /// Gives an allowed host a TLS PSK (`nvmf_subsystem_add_host ... psk`).
    pub fn set_host_psk(
        &mut self,
        nqn: &str,
        host: &str,
        psk: crate::nvmf::subsystem::HostPsk,
    ) -> Result<(), String> {
        let s = self.nvme_subsystem_mut(nqn)?;
        if !s.hosts.iter().any(|h| h == host) {
            return Err(format!("host: {host} is not in the allowed list of {nqn}"));
        }
        s.host_psks.insert(host.to_string(), psk);
        self.view.genctr += 1;
        Ok(())
    }

    pub fn remove_host(&mut self, nqn: &str, host: &str) -> Result<(), String> {
        let s = self.nvme_subsystem_mut(nqn)?;
        let before = s.hosts.len();
        s.hosts.retain(|h| h != host);
        if before == s.hosts.len() {
            return Err(format!("host: {host} is not in the allowed list of {nqn}"));
        }
        s.host_keys.remove(host);
        s.host_psks.remove(host);
        self.view.genctr += 1;
        Ok(())
    }

    pub fn allow_any_host(&mut self, nqn: &str, allow: bool) -> Result<(), String> {
        self.nvme_subsystem_mut(nqn)?.allow_any_host = allow;
        self.view.genctr += 1;
        Ok(())
    }

    pub fn referrals(&self) -> &[Referral] {
        &self.view.referrals
    }

    /// Adds a discovery referral (an existing one is kept as it is, as SPDK).
    pub fn add_referral(&mut self, r: Referral) {
        if self
            .view
            .referrals
            .iter()
            .any(|x| x.same(&r.addr, &r.subnqn))
        {
            return;
        }
        Arc::make_mut(&mut self.view.referrals).push(r);
        self.view.genctr += 1;
    }

    pub fn remove_referral(&mut self, addr: &ListenAddr, subnqn: &str) -> Result<(), String> {
        let before = self.view.referrals.len();
        Arc::make_mut(&mut self.view.referrals).retain(|r| !r.same(addr, subnqn));
        if self.view.referrals.len() == before {
            return Err(format!(
                "address: no referral to {}:{} for {subnqn}",
                addr.traddr, addr.trsvcid
            ));
        }
        self.view.genctr += 1;
        Ok(())
    }

    /// Tears everything down (application shutdown).
    pub fn shutdown(&mut self) {
        for a in self.acceptors.drain(..) {
            a.poller.unregister();
        }
        self.descs.clear();
        let nvme: Vec<u64> = self
            .view
            .iter()
            .filter(|s| !s.is_discovery())
            .map(|s| s.id)
            .collect();
        for id in nvme {
            self.view.remove(id);
            self.dirty.push(id);
            self.unindexed.push(id);
        }
    }
}

/// A bdev under a namespace is going away: remove the namespace (AEN to hosts).
fn hot_remove(subsys_id: u64, nsid: u32) {
    let nqn = with_target(|t| {
        t.view
            .subsystem(subsys_id)
            .filter(|s| s.namespaces.contains_key(&nsid))
            .map(|s| s.nqn.clone())
    });
    if let Some(nqn) = nqn {
        if with_target(|t| t.remove_ns(&nqn, nsid)).is_ok() {
            tracing::info!(%nqn, nsid, "namespace removed: its bdev is being deleted");
            publish(|| {});
        }
    }
}

/// A namespace's bdev changed size (main reactor): the new size goes into the view, and
/// the controllers raise a Namespace Attribute Changed event for it.
fn ns_resized(subsys_id: u64, nsid: u32) {
    let changed = with_target(|t| {
        let ns = t.view.subsystem(subsys_id)?.namespaces.get(&nsid)?;
        let blocks = ns.bdev.num_blocks();
        if ns.size_blocks == blocks {
            return None;
        }
        t.subsystem_by_id_mut(subsys_id)?
            .namespaces
            .get_mut(&nsid)?
            .size_blocks = blocks;
        Some(blocks)
    });
    if let Some(blocks) = changed {
        tracing::info!(nsid, blocks, "namespace resized: telling the hosts");
        publish(|| {});
    }
}

/// One accept poll: hands each new connection to the next reactor.
fn accept_some(
    listener: &Rc<RefCell<Box<dyn Listener>>>,
    cores: &[u32],
    rr: &Rc<Cell<usize>>,
    addr: &ListenAddr,
) -> PollStatus {
    let mut n = 0;
    let mut l = listener.borrow_mut();
    while n < 32 {
        match l.accept() {
            Ok(Some(sock)) => {
                n += 1;
                let i = rr.get();
                rr.set(i.wrapping_add(1));
                let core = cores[i % cores.len()];
                let addr = addr.clone();
                reactor::send_to(core, move || tcp::add_connection(sock, addr));
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                break;
            }
        }
    }
    PollStatus::from_work(n)
}

/// Registers the shutdown hook that closes listeners and every connection.
pub fn register_shutdown() {
    reactor::register_shutdown_hook("nvmf", |done| {
        with_target(|t| t.shutdown());
        reactor::for_each_reactor(tcp::shutdown_group, done);
    });
}
