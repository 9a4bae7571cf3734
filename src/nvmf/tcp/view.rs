//! Applying a new snapshot of the target to this reactor's poll group: namespaces' bdev
//! channels, removed subsystems and listeners, namespace-change notices.

use super::*;

impl PollGroup {
    pub(super) fn apply_view(&mut self, view: Arc<TargetView>) {
        if view.version <= self.view.version {
            return;
        }
        let old = std::mem::replace(&mut self.view, view.clone());
        // Namespace channels: open the new ones, close the ones gone or re-pointed.
        let mut wanted: HashMap<(u64, u32), &BdevHandle> = HashMap::new();
        for s in &view.subsystems {
            for ns in s.namespaces.values() {
                wanted.insert((s.id, ns.nsid), &ns.bdev);
            }
        }
        self.ns
            .retain(|k, c| wanted.get(k).is_some_and(|b| Arc::ptr_eq(b, &c.bdev)));
        for (k, b) in wanted {
            if self.ns.contains_key(&k) {
                continue;
            }
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
            let changed = changed_namespaces(old.subsystem(s.id).map(|o| o.as_ref()), s);
            if !changed.is_empty() {
                if let Some(dw0) = c.namespaces_changed(&changed) {
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
}

/// nsids added, removed or re-pointed between two snapshots of a subsystem.
pub(super) fn changed_namespaces(
    old: Option<&crate::nvmf::subsystem::Subsystem>,
    new: &crate::nvmf::subsystem::Subsystem,
) -> Vec<u32> {
    let Some(old) = old else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (nsid, ns) in &new.namespaces {
        match old.namespaces.get(nsid) {
            Some(o) if Arc::ptr_eq(&o.bdev, &ns.bdev) && o.size_blocks == ns.size_blocks => {}
            _ => out.push(*nsid),
        }
    }
    for nsid in old.namespaces.keys() {
        if !new.namespaces.contains_key(nsid) {
            out.push(*nsid);
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
