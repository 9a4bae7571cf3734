//! Applying a new snapshot of the target to this reactor's poll group: namespaces' bdev
//! channels, removed subsystems and listeners, namespace-change notices.

use super::*;
use crate::nvmf::subsystem::Namespace;

impl PollGroup {
    pub(super) fn apply_view(&mut self, view: Arc<TargetView>) {
        if view.version <= self.view.version {
            return;
        }
        let old = std::mem::replace(&mut self.view, view.clone());
        // Namespace channels: open the new ones, close the ones gone or re-pointed.
        let mut wanted: HashMap<(u64, u32), &Namespace> = HashMap::new();
        for s in &view.subsystems {
            for ns in s.namespaces.values() {
                wanted.insert((s.id, ns.nsid), ns);
            }
        }
        self.ns.retain(|k, c| {
            wanted
                .get(k)
                .is_some_and(|ns| Arc::ptr_eq(&ns.bdev, &c.bdev))
        });
        for (k, ns) in wanted {
            if let Some(c) = self.ns.get_mut(&k) {
                c.visible_hosts = ns.visible_hosts.clone();
                c.anagrpid = ns.anagrpid;
                continue;
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
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, bdev = b.name(), "cannot open a namespace's bdev")
                }
            }
        }
        // Queues whose subsystem or listener went away are closed; controllers hear of
        // namespace changes.
        let mut close = Vec::new();
        let mut aens: Vec<(usize, u32)> = Vec::new();
        for (idx, qp) in self.qpairs.iter_mut() {
            let Some(_) = qp.qid else { continue };
            let Some(s) = view.subsystem(qp.subsys_id) else {
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
                if view.genctr != old.genctr {
                    if let Some(dw0) = c.discovery_changed() {
                        aens.push((idx, dw0));
                    }
                }
                continue;
            }
            let changed =
                changed_namespaces(old.subsystem(s.id).map(|o| o.as_ref()), s, &c.hostnqn);
            let mut event = None;
            if !changed.is_empty() {
                event = c.namespaces_changed(&changed);
            }
            let ana_changed = old
                .subsystem(s.id)
                .is_some_and(|o| crate::nvmf::ana::changed(o, s, &qp.listen, &c.hostnqn));
            if ana_changed && c.queue_ana_change() && event.is_none() {
                event = c.take_event();
            }
            if let Some(dw0) = event {
                aens.push((idx, dw0));
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
        .filter(|n| !new.namespaces.contains_key(n));
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
