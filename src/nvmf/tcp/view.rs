//! Applying a new snapshot of the target to this reactor's poll group, at the cost of what
//! changed, and the namespace channels opened only while a queue of their subsystem is here.
//!
//! A publication names the subsystems it changed ([`TargetView::changed`]); a poll group
//! holding the previous version looks at those alone (any other gap compares every
//! subsystem's `Arc` with its own, still without looking inside the unchanged ones): for
//! each, it re-syncs the namespace channels (if it has them open) and checks the queues of
//! that subsystem on this reactor, found through [`SubUsers`]. Queues of the discovery
//! subsystem are also checked when the discovery log or the set of listeners changed.
//!
//! Channels: a namespace's bdev channel (with its descriptor, I/O queues, statistics and
//! poller) exists on a reactor only while an I/O queue of its subsystem is connected there:
//! opened with the first (at Connect, never on the I/O path), closed with the last. So a
//! namespace no host uses costs a reactor nothing but its share of the published view
//! (one copy for the whole process, ~150 B per namespace: see `subsystem.rs`).

use super::*;
use crate::nvmf::subsystem::{Namespace, Subsystem};
use std::collections::BTreeSet;

/// The connected queues of one subsystem on this reactor.
#[derive(Debug, Default)]
pub(super) struct SubUsers {
    /// Slab indices of its connected queue pairs (admin and I/O).
    qpairs: BTreeSet<usize>,
    /// How many of them are I/O queues: its namespaces' channels are open while > 0.
    io: usize,
}

impl SubUsers {
    /// Slab indices of the subsystem's connected queue pairs here.
    pub(super) fn qpairs_iter(&self) -> impl Iterator<Item = &usize> {
        self.qpairs.iter()
    }
}

impl PollGroup {
    pub(super) fn apply_view(&mut self, view: Arc<TargetView>) {
        if view.version <= self.view.version {
            return;
        }
        let old = std::mem::replace(&mut self.view, view.clone());
        let (changed, listeners_changed): (Vec<u64>, bool) = if view.version == old.version + 1 {
            (view.changed.to_vec(), view.listeners_changed)
        } else {
            // Missed a version: every subsystem whose snapshot is not the one we hold.
            let mut ids: Vec<u64> = view
                .subsystems
                .iter()
                .filter(|(id, s)| old.subsystem(**id).is_none_or(|o| !Arc::ptr_eq(o, s)))
                .map(|(id, _)| *id)
                .chain(
                    old.subsystems
                        .keys()
                        .filter(|id| view.subsystem(**id).is_none())
                        .copied(),
                )
                .collect();
            ids.sort_unstable();
            (ids, true)
        };
        let genctr_changed = view.genctr != old.genctr;
        for sid in &changed {
            self.sync_channels(*sid, old.subsystem(*sid), view.subsystem(*sid));
        }
        // The queues to look at: those of the changed subsystems, and the discovery
        // controllers when the discovery log or the listeners changed.
        let mut check: BTreeSet<u64> = changed.iter().copied().collect();
        if genctr_changed || listeners_changed {
            for s in [
                view.by_nqn(wire::DISCOVERY_NQN),
                old.by_nqn(wire::DISCOVERY_NQN),
            ]
            .into_iter()
            .flatten()
            {
                check.insert(s.id);
            }
        }
        let mut close = Vec::new();
        let mut aens: Vec<(usize, u32)> = Vec::new();
        for sid in check {
            let Some(users) = self.users.get(&sid) else {
                continue;
            };
            let new_s = view.subsystem(sid);
            let old_s = old.subsystem(sid);
            for &idx in &users.qpairs {
                let Some(qp) = self.qpairs.get_mut(idx) else {
                    continue;
                };
                let Some(s) = new_s else {
                    close.push(idx);
                    continue;
                };
                let listening = if s.is_discovery() {
                    view.has_listener(&qp.listen)
                } else {
                    s.has_listener(&qp.listen)
                };
                if !listening {
                    close.push(idx);
                    continue;
                }
                qp.ana = crate::nvmf::ana::path_view(s, &qp.listen);
                let Some(c) = qp.ctrlr.as_mut() else { continue };
                if !s.host_allowed(&c.hostnqn) {
                    close.push(idx);
                    continue;
                }
                if c.discovery {
                    if genctr_changed {
                        if let Some(dw0) = c.discovery_changed() {
                            aens.push((idx, dw0));
                        }
                    }
                    continue;
                }
                let nsids = changed_namespaces(old_s.map(|o| o.as_ref()), s, &c.hostnqn);
                let mut event = None;
                if !nsids.is_empty() {
                    event = c.namespaces_changed(&nsids);
                }
                let ana_changed =
                    old_s.is_some_and(|o| crate::nvmf::ana::changed(o, s, &qp.listen, &c.hostnqn));
                if ana_changed && c.queue_ana_change() && event.is_none() {
                    event = c.take_event();
                }
                if let Some(dw0) = event {
                    aens.push((idx, dw0));
                }
            }
        }
        for (idx, dw0) in aens {
            self.complete_aer(idx, dw0);
            self.flush(idx);
        }
        for idx in close {
            tracing::info!(
                idx,
                "closing a queue pair: its subsystem or listener was removed"
            );
            self.close_qpair(idx);
        }
        self.process_closes();
    }

    /// A queue finished its Connect: it now belongs to its subsystem's users here (the
    /// first I/O queue opens the subsystem's namespace channels).
    pub(super) fn attach_qpair(&mut self, idx: usize) {
        let Some(qp) = self.qpairs.get(idx) else {
            return;
        };
        let (sid, io) = match qp.qid {
            Some(qid) => (qp.subsys_id, qid > 0),
            None => return,
        };
        let users = self.users.entry(sid).or_default();
        users.qpairs.insert(idx);
        if io {
            users.io += 1;
            if users.io == 1 {
                let s = self.view.subsystem(sid).cloned();
                self.sync_channels(sid, None, s.as_ref());
            }
        }
    }

    /// A connected queue is going away (`close_qpair`): the last I/O queue of its
    /// subsystem here closes the subsystem's namespace channels.
    pub(super) fn detach_qpair(&mut self, idx: usize, sid: u64, qid: u16) {
        let Some(users) = self.users.get_mut(&sid) else {
            return;
        };
        if !users.qpairs.remove(&idx) {
            return;
        }
        if qid > 0 {
            users.io = users.io.saturating_sub(1);
            if users.io == 0 {
                let s = self.view.subsystem(sid).cloned();
                self.sync_channels(sid, s.as_ref(), None);
            }
        }
        if self.users.get(&sid).is_some_and(|u| u.qpairs.is_empty()) {
            self.users.remove(&sid);
        }
    }

    /// Brings the channels of subsystem `sid` from `old` to `new` (either may be absent),
    /// if this reactor has I/O queues of it (or `old` is `None` and the first just came):
    /// closes the channels of namespaces gone or re-pointed, opens the new ones, updates
    /// the hosts and ANA groups of the others. O(namespaces of that subsystem).
    fn sync_channels(
        &mut self,
        sid: u64,
        old: Option<&Arc<Subsystem>>,
        new: Option<&Arc<Subsystem>>,
    ) {
        let in_use = self.users.get(&sid).is_some_and(|u| u.io > 0);
        if let Some(old) = old {
            for (nsid, ons) in old.namespaces.iter() {
                let keep = in_use
                    && new
                        .and_then(|n| n.namespaces.get(nsid))
                        .is_some_and(|ns| Arc::ptr_eq(&ns.bdev, &ons.bdev));
                if !keep {
                    self.ns.remove(&(sid, *nsid));
                }
            }
        }
        if !in_use {
            return;
        }
        let Some(new) = new else {
            return;
        };
        for ns in new.namespaces.values() {
            self.open_ns(sid, ns);
        }
    }

    /// Opens (or refreshes the host list and ANA group of) this reactor's channel of one
    /// namespace.
    fn open_ns(&mut self, sid: u64, ns: &Namespace) {
        let k = (sid, ns.nsid);
        if let Some(c) = self.ns.get_mut(&k) {
            if Arc::ptr_eq(&c.bdev, &ns.bdev) {
                c.visible_hosts = ns.visible_hosts.clone();
                c.anagrpid = ns.anagrpid;
                c.reservations = ns.reservations.clone();
                return;
            }
            self.ns.remove(&k);
        }
        let b = &ns.bdev;
        let key = k;
        let desc = bdev::open_handle(b, move |ev| {
            if ev == BdevEvent::Remove {
                reactor::defer(move || {
                    let _ = try_group(|g| g.ns.remove(&key));
                });
            }
        });
        let opened = desc.and_then(|d| d.open_channel(self.sink.clone()).map(|c| (d, c)));
        match opened {
            Ok((d, chan)) => {
                self.ns.insert(
                    k,
                    NsChan {
                        bdev: b.clone(),
                        chan,
                        _desc: d,
                        visible_hosts: ns.visible_hosts.clone(),
                        anagrpid: ns.anagrpid,
                        reservations: ns.reservations.clone(),
                    },
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, bdev = b.name(), "cannot open a namespace's bdev")
            }
        }
    }

    /// This reactor's view (tests: it must equal one built from scratch).
    pub(super) fn view(&self) -> &Arc<TargetView> {
        &self.view
    }
}

/// nsids whose state changed for the host `hostnqn` between two snapshots of a subsystem:
/// added, removed, re-pointed or resized, or made visible or invisible to that host.
pub(super) fn changed_namespaces(
    old: Option<&crate::nvmf::subsystem::Subsystem>,
    new: &crate::nvmf::subsystem::Subsystem,
    hostnqn: &str,
) -> Vec<u32> {
    let Some(old) = old else {
        return Vec::new();
    };
    let seen = |s: &'_ crate::nvmf::subsystem::Subsystem, nsid: &u32| {
        s.namespaces
            .get(nsid)
            .filter(|ns| ns.visible_to(hostnqn))
            .map(|ns| (ns.bdev.clone(), ns.size_blocks))
    };
    let gone = old
        .namespaces
        .keys()
        .filter(|n| !new.namespaces.contains_key(*n));
    let mut out = Vec::new();
    for nsid in new.namespaces.keys().chain(gone) {
        match (seen(old, nsid), seen(new, nsid)) {
            (None, None) => {}
            (Some((ob, os)), Some((nb, ns))) if Arc::ptr_eq(&ob, &nb) && os == ns => {}
            _ => out.push(*nsid),
        }
    }
    out
}

/// Merges the iostat of `bdevs` from every reactor (main reactor), then calls `done`.
pub(super) fn gather_iostat(bdevs: Vec<BdevHandle>, done: impl FnOnce(IoStats) + Send + 'static) {
    let mut total = IoStats::new();
    for b in &bdevs {
        bdev::collect_closed_stats(b, &mut total);
    }
    let total = Arc::new(Mutex::new(total));
    let each_total = total.clone();
    let bdevs = Arc::new(bdevs);
    reactor::for_each_reactor(
        move || {
            let mut t = each_total.lock().unwrap_or_else(|e| e.into_inner());
            for b in bdevs.iter() {
                bdev::collect_local_stats(b, &mut t);
            }
        },
        move || {
            let t = total.lock().unwrap_or_else(|e| e.into_inner()).clone();
            done(t)
        },
    );
}
