//! Asymmetric Namespace Access: ANA states per listener and group, the ANA log page, path statuses.
//!
//! A subsystem created with `ana_reporting` puts each namespace in an ANA group (`anagrpid`,
//! by default its nsid; groups are 1..=max_nsid as in SPDK) and keeps, for each of its
//! listeners, the state of every group as seen through that listener ([`ListenerAna`]: a
//! base state for all groups plus the groups set otherwise). A controller sees the states of
//! the listener its admin queue connected on: in Identify (CMIC, ANACAP, ANATT, ANAGRPMAX,
//! NANAGRPID, OAES; ANAGRPID and NUSE of a namespace), in the ANA log page (0x0C) and in the
//! status of its I/O: a command to a namespace whose group is inaccessible, in persistent
//! loss or in change on that path fails with the path status (SCT 3h) the base
//! specification gives, without DNR, so the host retries on another path (so does Get
//! Features of a namespace-specific feature of such a namespace, as SPDK). Changes are made
//! on the main reactor like every edit of a subsystem and reach the reactors with the next
//! view; a controller whose view of the log page changed gets an ANA change notice (AEN).
//! Without `ana_reporting` every path is optimized and nothing here shows.

use super::subsystem::{ListenAddr, Namespace, Subsystem};
use super::wire::{self, aen, ana_state, AnaGroup, IdentifyController, IdentifyNamespace, Status};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// ANA Transition Time reported in Identify Controller (seconds; SPDK's value).
pub const ANATT_SECS: u8 = 10;

/// CMIC bit 3: the controller reports ANA.
const CMIC_ANA_REPORTING: u8 = 1 << 3;

/// ANACAP bits: every state pollux can report (optimized, non-optimized, inaccessible,
/// persistent loss, change). Bit 6 (the group of a namespace never changes while attached)
/// stays clear: `nvmf_subsystem_set_ns_ana_group` moves attached namespaces.
const ANACAP: u8 = 0x1f;

/// An ANA state as SPDK's RPCs spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnaState {
    Optimized,
    NonOptimized,
    Inaccessible,
    PersistentLoss,
    Change,
}

impl AnaState {
    pub const ALL: [AnaState; 5] = [
        AnaState::Optimized,
        AnaState::NonOptimized,
        AnaState::Inaccessible,
        AnaState::PersistentLoss,
        AnaState::Change,
    ];

    /// The name in RPC parameters and results (SPDK's spelling).
    pub fn name(self) -> &'static str {
        match self {
            AnaState::Optimized => "optimized",
            AnaState::NonOptimized => "non_optimized",
            AnaState::Inaccessible => "inaccessible",
            AnaState::PersistentLoss => "persistent_loss",
            AnaState::Change => "change",
        }
    }

    /// Parses an RPC state name; the error names `field` and the accepted values.
    pub fn parse(field: &str, s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                format!(
                    "{field}: {s} is not an ANA state (optimized, non_optimized, inaccessible, \
                 persistent_loss, change)"
                )
            })
    }

    /// The state field of a group descriptor.
    pub fn code(self) -> u8 {
        match self {
            AnaState::Optimized => ana_state::OPTIMIZED,
            AnaState::NonOptimized => ana_state::NON_OPTIMIZED,
            AnaState::Inaccessible => ana_state::INACCESSIBLE,
            AnaState::PersistentLoss => ana_state::PERSISTENT_LOSS,
            AnaState::Change => ana_state::CHANGE,
        }
    }

    /// The status of an I/O command to a namespace of a group in this state (`None`: the
    /// path serves I/O). No DNR: the host is to retry on another path.
    pub fn path_status(self) -> Option<Status> {
        match self {
            AnaState::Optimized | AnaState::NonOptimized => None,
            AnaState::Inaccessible => Some(Status::ANA_INACCESSIBLE),
            AnaState::PersistentLoss => Some(Status::ANA_PERSISTENT_LOSS),
            AnaState::Change => Some(Status::ANA_TRANSITION),
        }
    }

    /// Whether a namespace of a group in this state reports NUSE 0 (SPDK's rule).
    fn hides_usage(self) -> bool {
        matches!(self, AnaState::Inaccessible | AnaState::PersistentLoss)
    }
}

/// The ANA states of the groups as seen through one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerAna {
    /// The state of every group not in `groups`.
    base: AnaState,
    /// Groups whose state differs from `base`.
    groups: BTreeMap<u32, AnaState>,
    /// State changes made on this listener for every group at once.
    all_changes: u64,
    /// State changes made on this listener for one group.
    group_changes: BTreeMap<u32, u64>,
}

impl ListenerAna {
    pub fn new(base: AnaState) -> Self {
        Self {
            base,
            groups: BTreeMap::new(),
            all_changes: 0,
            group_changes: BTreeMap::new(),
        }
    }

    /// The state of group `anagrpid` through this listener.
    #[inline]
    pub fn state(&self, anagrpid: u32) -> AnaState {
        if self.groups.is_empty() {
            return self.base;
        }
        self.groups.get(&anagrpid).copied().unwrap_or(self.base)
    }

    /// Sets the state of one group, or of all (`None`). Returns whether anything changed.
    fn set(&mut self, state: AnaState, anagrpid: Option<u32>) -> bool {
        match anagrpid {
            None => {
                let changed = self.base != state || !self.groups.is_empty();
                if changed {
                    self.base = state;
                    self.groups.clear();
                    self.all_changes += 1;
                }
                changed
            }
            Some(g) => {
                if self.state(g) == state {
                    return false;
                }
                if state == self.base {
                    self.groups.remove(&g);
                } else {
                    self.groups.insert(g, state);
                }
                *self.group_changes.entry(g).or_default() += 1;
                true
            }
        }
    }

    /// State changes of group `anagrpid` through this listener.
    fn changes_of(&self, anagrpid: u32) -> u64 {
        self.all_changes + self.group_changes.get(&anagrpid).copied().unwrap_or(0)
    }

    /// Every state change made through this listener.
    fn changes(&self) -> u64 {
        self.all_changes + self.group_changes.values().sum::<u64>()
    }
}

/// The ANA configuration of a subsystem: each listener's states and how often the
/// namespaces of each group changed (the change counts of the log page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubsystemAna {
    listeners: Vec<(ListenAddr, Arc<ListenerAna>)>,
    membership: BTreeMap<u32, u64>,
}

impl SubsystemAna {
    /// The states seen through `addr`, if it is a listener of the subsystem.
    pub fn listener(&self, addr: &ListenAddr) -> Option<&Arc<ListenerAna>> {
        self.listeners
            .iter()
            .find(|(l, _)| l.same_endpoint(addr))
            .map(|(_, a)| a)
    }

    /// A new listener: every group in `state`.
    pub fn add_listener(&mut self, addr: &ListenAddr, state: AnaState) {
        self.remove_listener(addr);
        self.listeners
            .push((addr.clone(), Arc::new(ListenerAna::new(state))));
    }

    pub fn remove_listener(&mut self, addr: &ListenAddr) {
        self.listeners.retain(|(l, _)| !l.same_endpoint(addr));
    }

    /// A namespace entered or left group `anagrpid`.
    pub fn membership_changed(&mut self, anagrpid: u32) {
        *self.membership.entry(anagrpid).or_default() += 1;
    }

    fn membership_changes(&self, anagrpid: u32) -> u64 {
        self.membership.get(&anagrpid).copied().unwrap_or(0)
    }
}

/// The listener states a queue connected on `listen` uses for its I/O: `None` when the
/// subsystem does not report ANA (every path optimized); an unknown listener is
/// inaccessible (SPDK's rule for an inactive listener).
pub fn path_view(s: &Subsystem, listen: &ListenAddr) -> Option<Arc<ListenerAna>> {
    if !s.ana_reporting {
        return None;
    }
    Some(
        s.ana
            .listener(listen)
            .cloned()
            .unwrap_or_else(|| Arc::new(ListenerAna::new(AnaState::Inaccessible))),
    )
}

/// The state of group `anagrpid` seen through `listen`.
pub fn state_of(s: &Subsystem, listen: Option<&ListenAddr>, anagrpid: u32) -> AnaState {
    if !s.ana_reporting {
        return AnaState::Optimized;
    }
    listen
        .and_then(|l| s.ana.listener(l))
        .map_or(AnaState::Inaccessible, |a| a.state(anagrpid))
}

/// Checks a group id against the subsystem's range (1..=max_nsid, as SPDK).
pub fn check_group(s: &Subsystem, field: &str, anagrpid: u32) -> Result<(), String> {
    let max = s.max_nsid();
    if anagrpid == 0 || anagrpid > max {
        return Err(format!(
            "{field}: ANA group {anagrpid} is not in 1..={max} (groups are numbered up to the \
             subsystem's maximum nsid)"
        ));
    }
    Ok(())
}

/// Sets the state of group `anagrpid` (all groups when `None`) on listener `addr`.
/// Returns whether anything changed.
pub fn set_state(
    s: &mut Subsystem,
    addr: &ListenAddr,
    state: AnaState,
    anagrpid: Option<u32>,
) -> Result<bool, String> {
    if !s.ana_reporting {
        return Err(format!(
            "nqn: {} was created without ana_reporting: its paths have no ANA state",
            s.nqn
        ));
    }
    if let Some(g) = anagrpid {
        check_group(s, "anagrpid", g)?;
    }
    let nqn = s.nqn.clone();
    let Some((_, l)) = s
        .ana
        .listeners
        .iter_mut()
        .find(|(l, _)| l.same_endpoint(addr))
    else {
        return Err(format!(
            "listen_address: {}:{} is not a listener of {nqn}",
            addr.traddr, addr.trsvcid
        ));
    };
    Ok(Arc::make_mut(l).set(state, anagrpid))
}

/// Moves namespace `nsid` to group `anagrpid`. Returns whether it moved.
pub fn set_ns_group(s: &mut Subsystem, nsid: u32, anagrpid: u32) -> Result<bool, String> {
    if !s.ana_reporting {
        return Err(format!(
            "nqn: {} was created without ana_reporting: its namespaces have no ANA group",
            s.nqn
        ));
    }
    check_group(s, "anagrpid", anagrpid)?;
    let nqn = s.nqn.clone();
    let ns = s
        .namespaces
        .get_mut(&nsid)
        .ok_or_else(|| format!("nsid: namespace {nsid} not found in {nqn}"))?;
    let old = ns.anagrpid;
    if old == anagrpid {
        return Ok(false);
    }
    ns.anagrpid = anagrpid;
    s.ana.membership_changed(old);
    s.ana.membership_changed(anagrpid);
    Ok(true)
}

/// Identify Controller fields of ANA reporting.
pub fn identify_controller(id: &mut IdentifyController, s: &Subsystem) {
    if !s.ana_reporting {
        return;
    }
    id.cmic |= CMIC_ANA_REPORTING;
    id.oaes = (id.oaes.get() | aen::CONFIG_ANA_CHANGE).into();
    id.anatt = ANATT_SECS;
    id.anacap = ANACAP;
    id.anagrpmax = s.max_nsid().into();
    id.nanagrpid = s.max_nsid().into();
}

/// Identify Namespace fields of ANA reporting: the group, and NUSE 0 when the path cannot
/// reach the namespace.
pub fn identify_namespace(
    id: &mut IdentifyNamespace,
    s: &Subsystem,
    ns: &Namespace,
    listen: Option<&ListenAddr>,
) {
    if !s.ana_reporting {
        return;
    }
    id.anagrpid = ns.anagrpid.into();
    if state_of(s, listen, ns.anagrpid).hides_usage() {
        id.nuse = 0.into();
    }
}

/// The groups of the log page as the host `hostnqn` sees them through `listen`: every group
/// holding a namespace the host sees, in group order, with its namespaces.
fn groups(s: &Subsystem, listen: Option<&ListenAddr>, hostnqn: &str) -> Vec<AnaGroup> {
    let mut by_group: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for ns in s.namespaces.values().filter(|ns| ns.visible_to(hostnqn)) {
        by_group.entry(ns.anagrpid).or_default().push(ns.nsid);
    }
    let l = listen.and_then(|l| s.ana.listener(l));
    by_group
        .into_iter()
        .map(|(g, nsids)| AnaGroup {
            anagrpid: g,
            change_count: l.map_or(0, |l| l.changes_of(g)) + s.ana.membership_changes(g),
            state: state_of(s, listen, g).code(),
            nsids,
        })
        .collect()
}

/// The ANA log page (0x0C) for a controller of `hostnqn` connected on `listen`; with `rgo`
/// (Return Groups Only) the descriptors carry no NSIDs.
pub fn log_page(s: &Subsystem, listen: Option<&ListenAddr>, hostnqn: &str, rgo: bool) -> Vec<u8> {
    let mut groups = groups(s, listen, hostnqn);
    if rgo {
        for g in &mut groups {
            g.nsids.clear();
        }
    }
    let l = listen.and_then(|l| s.ana.listener(l));
    let count = l.map_or(0, |l| l.changes()) + s.ana.membership.values().sum::<u64>();
    wire::encode_ana_log(count, &groups)
}

/// Whether the ANA log page a controller of `hostnqn` on `listen` reads differs between
/// two snapshots of its subsystem (states or namespaces of its groups): an ANA change
/// notice is due.
pub fn changed(old: &Subsystem, new: &Subsystem, listen: &ListenAddr, hostnqn: &str) -> bool {
    if !new.ana_reporting {
        return false;
    }
    let strip = |mut v: Vec<AnaGroup>| {
        for g in &mut v {
            g.change_count = 0;
        }
        v
    };
    strip(groups(old, Some(listen), hostnqn)) != strip(groups(new, Some(listen), hostnqn))
}

/// `nvmf_subsystem_get_listeners`' view of a listener's states (SPDK: one entry per group
/// 1..=max_nsid).
pub fn listener_json(s: &Subsystem, addr: &ListenAddr) -> Value {
    json!((1..=s.max_nsid())
        .map(|g| json!({"ana_group": g, "ana_state": state_of(s, Some(addr), g).name()}))
        .collect::<Vec<_>>())
}

/// The config calls that recreate the listener states beyond the base state of each
/// listener (given by `nvmf_subsystem_add_listener`'s `ana_state`): one
/// `nvmf_subsystem_listener_set_ana_state` per group set otherwise.
pub fn config_overrides(s: &Subsystem, addr: &ListenAddr) -> Vec<Value> {
    let Some(l) = s.ana.listener(addr) else {
        return Vec::new();
    };
    l.groups
        .iter()
        .map(|(g, st)| {
            json!({"nqn": s.nqn, "listen_address": addr.to_json(), "ana_state": st.name(),
                   "anagrpid": g})
        })
        .collect()
}

/// The base state of listener `addr` (saved as `nvmf_subsystem_add_listener`'s `ana_state`).
pub fn base_state(s: &Subsystem, addr: &ListenAddr) -> Option<AnaState> {
    s.ana.listener(addr).map(|l| l.base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvmf::subsystem::SubType;

    #[test]
    fn listener_states_track_base_and_groups_with_change_counts() {
        let mut l = ListenerAna::new(AnaState::Optimized);
        assert!(!l.set(AnaState::Optimized, Some(3)));
        assert!(l.set(AnaState::Inaccessible, Some(3)));
        assert_eq!(l.state(3), AnaState::Inaccessible);
        assert_eq!(l.state(4), AnaState::Optimized);
        assert_eq!(l.changes_of(3), 1);
        assert!(l.set(AnaState::NonOptimized, None));
        assert_eq!(l.state(3), AnaState::NonOptimized);
        assert!(l.groups.is_empty());
        assert_eq!(l.changes_of(3), 2);
        assert_eq!(l.changes_of(9), 1);
        assert_eq!(l.changes(), 2);
    }

    #[test]
    fn states_parse_by_spdk_name_and_map_to_path_statuses() {
        for s in AnaState::ALL {
            assert_eq!(AnaState::parse("ana_state", s.name()), Ok(s));
        }
        let e = AnaState::parse("ana_state", "down").unwrap_err();
        assert!(e.starts_with("ana_state: down"), "{e}");
        assert_eq!(AnaState::Optimized.path_status(), None);
        assert_eq!(AnaState::NonOptimized.path_status(), None);
        let st = AnaState::Inaccessible.path_status().unwrap();
        assert_eq!((st.sct(), st.sc(), st.dnr()), (3, 2, false));
        assert_eq!(AnaState::PersistentLoss.path_status().unwrap().sc(), 1);
        assert_eq!(AnaState::Change.path_status().unwrap().sc(), 3);
    }

    #[test]
    fn subsystem_without_ana_reporting_refuses_states() {
        let mut s = Subsystem::new(1, "nqn.2016-06.io.pollux:a", SubType::Nvme);
        let a = ListenAddr::tcp("127.0.0.1", 4420);
        s.ana.add_listener(&a, AnaState::Optimized);
        let e = set_state(&mut s, &a, AnaState::Inaccessible, None).unwrap_err();
        assert!(e.starts_with("nqn:"), "{e}");
        assert_eq!(state_of(&s, Some(&a), 1), AnaState::Optimized);
        s.ana_reporting = true;
        assert!(set_state(&mut s, &a, AnaState::Inaccessible, Some(2)).unwrap());
        let e = set_state(&mut s, &a, AnaState::Inaccessible, Some(0)).unwrap_err();
        assert!(e.starts_with("anagrpid:"), "{e}");
        let other = ListenAddr::tcp("127.0.0.1", 4421);
        let e = set_state(&mut s, &other, AnaState::Inaccessible, None).unwrap_err();
        assert!(e.starts_with("listen_address:"), "{e}");
        assert_eq!(state_of(&s, Some(&other), 1), AnaState::Inaccessible);
    }
}
