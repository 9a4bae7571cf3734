//! The `TargetView`: the snapshot of the target's subsystems and listeners every reactor holds, built of persistent maps.

use super::super::referral::Referral;
use super::super::subsystem::{ListenAddr, Subsystem};
use super::TransportOpts;
use std::sync::Arc;

/// The subsystems of a view by id: a persistent ordered map (ids grow with creation, so
/// this is creation order, the discovery subsystem first), cloned in O(1).
pub type SubsystemMap = imbl::OrdMap<u64, Arc<Subsystem>>;

/// A listen endpoint as the listener index keys it (transport, address, port).
type EndpointKey = (String, String);

fn endpoint_key(addr: &ListenAddr) -> EndpointKey {
    (addr.traddr.clone(), addr.trsvcid.clone())
}

/// What every reactor knows of the target. Built of persistent maps: the main reactor
/// keeps one, changes it in place (O(log n) per change) and publishes an O(1) clone, so
/// every unchanged subsystem's `Arc` is the same object in the old and the new view, and
/// a reactor applies only what [`TargetView::changed`] names.
#[derive(Debug, Clone)]
pub struct TargetView {
    /// Increases with every publication.
    pub version: u64,
    /// Discovery log generation counter.
    pub genctr: u64,
    pub transport: Option<TransportOpts>,
    /// The DH-HMAC-CHAP digests and DH groups the target allows (`nvmf_set_config`).
    pub dhchap: Arc<DhchapPolicy>,
    pub subsystems: SubsystemMap,
    /// Discovery referrals (listed in every discovery log page).
    pub referrals: Arc<Vec<Referral>>,
    /// NQN → subsystem id.
    pub(super) by_nqn: imbl::HashMap<String, u64>,
    /// Listen endpoint → number of subsystems listening there.
    pub(super) listeners: imbl::HashMap<EndpointKey, u32>,
    /// The subsystems (ids) created, changed or deleted since the previous version, and
    /// whether any listener came or went: a reactor holding exactly the previous version
    /// applies only these (any other compares every subsystem's `Arc`).
    pub changed: Arc<[u64]>,
    pub listeners_changed: bool,
}

/// The DH-HMAC-CHAP digests and DH groups a controller accepts, in its order of
/// preference (SPDK's `nvmf_set_config` `dhchap_digests` / `dhchap_dhgroups`; default: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhchapPolicy {
    pub digests: Vec<crate::nvmf::secret::Hash>,
    /// Group ids: 0 the NULL group, 1-5 ffdhe2048..ffdhe8192.
    pub dhgroups: Vec<u8>,
}

impl Default for DhchapPolicy {
    fn default() -> Self {
        use crate::nvmf::secret::Hash;
        Self {
            digests: vec![Hash::Sha256, Hash::Sha384, Hash::Sha512],
            dhgroups: vec![0, 1, 2, 3, 4, 5],
        }
    }
}

/// SPDK's names of the DH groups (`nvmf_set_config dhchap_dhgroups`), by group id.
pub const DHGROUP_NAMES: [&str; 6] = [
    "null",
    "ffdhe2048",
    "ffdhe3072",
    "ffdhe4096",
    "ffdhe6144",
    "ffdhe8192",
];

impl PartialEq for TargetView {
    /// The same target state (version and change notes aside): every subsystem the same
    /// object or equal field by field (the tests' "incremental = fresh" check).
    fn eq(&self, other: &Self) -> bool {
        self.genctr == other.genctr
            && self.referrals == other.referrals
            && self.transport == other.transport
            && self.dhchap == other.dhchap
            && self.by_nqn == other.by_nqn
            && self.listeners == other.listeners
            && self.subsystems.len() == other.subsystems.len()
            && self
                .subsystems
                .iter()
                .zip(other.subsystems.iter())
                .all(|((a_id, a), (b_id, b))| a_id == b_id && same_subsystem(a, b))
    }
}

/// Two snapshots of a subsystem describe the same state.
fn same_subsystem(a: &Arc<Subsystem>, b: &Arc<Subsystem>) -> bool {
    if Arc::ptr_eq(a, b) {
        return true;
    }
    let ns_eq = a.namespaces.len() == b.namespaces.len()
        && a.namespaces
            .iter()
            .zip(b.namespaces.iter())
            .all(|((x, n), (y, m))| {
                x == y
                    && Arc::ptr_eq(&n.bdev, &m.bdev)
                    && n.size_blocks == m.size_blocks
                    && n.nguid == m.nguid
                    && n.eui64 == m.eui64
                    && n.uuid == m.uuid
                    && n.visible_hosts == m.visible_hosts
                    && n.anagrpid == m.anagrpid
            });
    ns_eq
        && a.id == b.id
        && a.nqn == b.nqn
        && a.subtype == b.subtype
        && a.serial_number == b.serial_number
        && a.model_number == b.model_number
        && a.allow_any_host == b.allow_any_host
        && a.hosts == b.hosts
        && a.host_keys == b.host_keys
        && a.listeners == b.listeners
        && a.max_namespaces == b.max_namespaces
        && a.min_cntlid == b.min_cntlid
        && a.max_cntlid == b.max_cntlid
        && a.ana_reporting == b.ana_reporting
        && a.ana == b.ana
        && Arc::ptr_eq(&a.directory, &b.directory)
}

impl TargetView {
    pub fn empty() -> Self {
        Self {
            version: 0,
            genctr: 0,
            transport: None,
            dhchap: Default::default(),
            subsystems: SubsystemMap::new(),
            referrals: Default::default(),
            by_nqn: Default::default(),
            listeners: Default::default(),
            changed: Arc::new([]),
            listeners_changed: false,
        }
    }

    /// A view built from scratch from `subsystems` (what the incremental one must equal).
    pub fn build(
        genctr: u64,
        transport: Option<TransportOpts>,
        subsystems: impl IntoIterator<Item = Arc<Subsystem>>,
    ) -> Self {
        let mut v = Self::empty();
        v.genctr = genctr;
        v.transport = transport;
        for s in subsystems {
            v.count_listeners(&s.listeners, 1);
            v.insert(s);
        }
        v
    }

    /// Subsystem by id: O(log n).
    pub fn subsystem(&self, id: u64) -> Option<&Arc<Subsystem>> {
        self.subsystems.get(&id)
    }

    /// Subsystem by NQN: O(1).
    pub fn by_nqn(&self, nqn: &str) -> Option<&Arc<Subsystem>> {
        self.by_nqn.get(nqn).and_then(|id| self.subsystems.get(id))
    }

    /// Every subsystem, in creation order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Subsystem>> {
        self.subsystems.values()
    }

    /// Whether any subsystem listens on `addr` (discovery connections are accepted on any
    /// listener of the target): O(1).
    pub fn has_listener(&self, addr: &ListenAddr) -> bool {
        self.listeners.contains_key(&endpoint_key(addr))
    }

    pub(super) fn count_listeners(&mut self, listeners: &[ListenAddr], delta: i64) {
        for l in listeners {
            let k = endpoint_key(l);
            let n = self.listeners.get(&k).copied().unwrap_or(0) as i64 + delta;
            if n > 0 {
                self.listeners.insert(k, n as u32);
            } else {
                self.listeners.remove(&k);
            }
        }
    }

    /// Inserts a subsystem and its NQN (the listener index is the caller's).
    pub(super) fn insert(&mut self, s: Arc<Subsystem>) {
        self.by_nqn.insert(s.nqn.clone(), s.id);
        self.subsystems.insert(s.id, s);
    }

    pub(super) fn remove(&mut self, id: u64) -> Option<Arc<Subsystem>> {
        let old = self.subsystems.remove(&id)?;
        self.by_nqn.remove(&old.nqn);
        Some(old)
    }
}
