//! split: cuts one claimed base bdev into `split_count` consecutive parts named
//! `<base>p0`, `<base>p1`, ... (SPDK's `bdev_split_create`), each forwarding its I/O to the
//! base at its own block offset.
//!
//! The parts of one base share one `SplitGroup`: the base is opened and claimed once (module
//! `bdev_split`), and closed when the last part is destructed. Deleting the base deletes
//! every part; `bdev_split_delete` deletes the parts and releases the base. Each part's
//! UUID is derived from the base's and the part's index, so a config replayed after a
//! restart gives the parts the same UUIDs. A part costs one `BdevInfo` and one channel per
//! reactor that uses it, nothing per I/O.

#![forbid(unsafe_code)]

use super::{
    BdevError, BdevEvent, BdevHandle, BdevInfo, BdevIo, Completer, Desc, IoChannel, IoSink,
    ModuleChannel,
};
use crate::reactor;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub const PRODUCT_NAME: &str = "Split Disk";
const CLAIM: &str = "bdev_split";

/// The parts of one base: the claimed base and how many parts are still alive.
struct SplitGroup {
    id: u64,
    base: BdevHandle,
    desc: Mutex<Option<Desc>>,
    split_count: u32,
    split_size_mb: u64,
    live_parts: AtomicUsize,
}

impl SplitGroup {
    fn part_destructed(&self) {
        if self.live_parts.fetch_sub(1, Ordering::AcqRel) == 1 {
            drop(self.desc.lock().unwrap_or_else(|e| e.into_inner()).take());
            // Every part is gone (also when deleted one by one): the base may be split anew.
            let (base, id) = (self.base.name().to_string(), self.id);
            reactor::send_to(reactor::main_core(), move || {
                GROUPS.with(|g| {
                    let mut g = g.borrow_mut();
                    if g.get(&base).is_some_and(|(gid, _)| *gid == id) {
                        g.remove(&base);
                    }
                })
            });
        }
    }
}

thread_local! {
    /// Base name → its split's id and parts' names (main reactor).
    static GROUPS: RefCell<BTreeMap<String, (u64, Vec<String>)>> =
        const { RefCell::new(BTreeMap::new()) };
    static NEXT_ID: std::cell::Cell<u64> = const { std::cell::Cell::new(1) };
}

pub struct SplitBdev {
    group: Arc<SplitGroup>,
    index: u32,
    offset_blocks: u64,
}

impl SplitBdev {
    pub fn base_name(&self) -> &str {
        self.group.base.name()
    }
}

struct SplitChannel {
    base: IoChannel,
    offset_blocks: u64,
}

impl ModuleChannel for SplitChannel {
    fn submit(&mut self, mut io: BdevIo, _done: &Completer) {
        io.offset_blocks += self.offset_blocks;
        self.base.submit(io);
    }
}

/// Completes a part's I/O with the base's status, back at the part's own offsets.
struct Shift {
    upper: Completer,
    offset_blocks: u64,
}

impl IoSink for Shift {
    fn io_done(&self, mut io: BdevIo) {
        io.offset_blocks -= self.offset_blocks;
        let status = io.status();
        self.upper.complete(io, status);
    }
}

impl super::Bdev for SplitBdev {
    fn open_channel(
        &self,
        _bdev: &BdevHandle,
        done: &Completer,
    ) -> Result<Box<dyn ModuleChannel>, BdevError> {
        let sink: Rc<dyn IoSink> = Rc::new(Shift {
            upper: done.clone(),
            offset_blocks: self.offset_blocks,
        });
        Ok(Box::new(SplitChannel {
            base: IoChannel::open(&self.group.base, sink)?,
            offset_blocks: self.offset_blocks,
        }))
    }

    fn driver_specific(&self) -> Value {
        json!({"split": {"base_bdev": self.base_name(), "offset_blocks": self.offset_blocks}})
    }

    /// One entry per base (written by part 0) recreates every part.
    fn config(&self, _info: &BdevInfo) -> Option<Value> {
        (self.index == 0).then(|| {
            crate::rpc::config_entry(
                "bdev_split_create",
                json!({
                    "base_bdev": self.base_name(),
                    "split_count": self.group.split_count,
                    "split_size_mb": self.group.split_size_mb,
                }),
            )
        })
    }

    fn destruct(&self) {
        self.group.part_destructed();
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[derive(Debug, Clone)]
pub struct SplitOpts {
    pub base_bdev: String,
    pub split_count: u32,
    /// Size of each part in MiB; 0 divides the base evenly.
    pub split_size_mb: u64,
}

/// The UUID of part `index` of a base: the base's with its last four bytes mixed with the
/// index (stable across restarts, distinct per part, still a version-4 layout).
fn part_uuid(base_uuid: uuid::Uuid, index: u32) -> uuid::Uuid {
    let mut b = base_uuid.into_bytes();
    let mix = (index + 1).wrapping_mul(0x9e37_79b9).to_be_bytes();
    for (dst, m) in b[12..].iter_mut().zip(mix) {
        *dst ^= m;
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b)
}

/// Creates the parts (main reactor); `done` gets their names in order.
pub fn create(opts: SplitOpts, done: impl FnOnce(Result<Vec<String>, BdevError>) + Send + 'static) {
    let made = plan(&opts);
    let (group, parts) = match made {
        Ok(v) => v,
        Err(e) => return done(Err(e)),
    };
    GROUPS.with(|g| {
        g.borrow_mut().insert(
            opts.base_bdev.clone(),
            (
                group.id,
                parts.iter().map(|(i, _)| i.name.clone()).collect(),
            ),
        )
    });
    register_parts(group, parts.into_iter(), Vec::new(), Box::new(done));
}

type PartsDone = Box<dyn FnOnce(Result<Vec<String>, BdevError>) + Send>;

/// Registers the parts one after the other (each registration answers on the main reactor).
fn register_parts(
    group: Arc<SplitGroup>,
    mut rest: std::vec::IntoIter<(BdevInfo, SplitBdev)>,
    mut names: Vec<String>,
    done: PartsDone,
) {
    let Some((info, part)) = rest.next() else {
        return done(Ok(names));
    };
    let name = info.name.clone();
    super::register(info, Box::new(part), move |r| match r {
        Ok(_) => {
            names.push(name);
            register_parts(group, rest, names, done);
        }
        Err(e) => {
            // The parts not registered never destruct: count them out.
            for _ in 0..=rest.len() {
                group.part_destructed();
            }
            done(Err(e))
        }
    });
}

/// Checks the request, opens and claims the base, and builds every part.
/// The group of a new split and its parts, ready to register.
type Planned = (Arc<SplitGroup>, Vec<(BdevInfo, SplitBdev)>);

fn plan(opts: &SplitOpts) -> Result<Planned, BdevError> {
    if opts.split_count == 0 {
        return Err(BdevError::Invalid("split_count: must be at least 1".into()));
    }
    if GROUPS.with(|g| g.borrow().contains_key(&opts.base_bdev)) {
        return Err(BdevError::Exists(format!(
            "split of {} (delete it with bdev_split_delete first)",
            opts.base_bdev
        )));
    }
    let base = super::lookup(&opts.base_bdev)
        .ok_or_else(|| BdevError::NotFound(opts.base_bdev.clone()))?;
    let bs = u64::from(base.block_size());
    let part_blocks = if opts.split_size_mb == 0 {
        base.num_blocks() / u64::from(opts.split_count)
    } else {
        let bytes = opts.split_size_mb.saturating_mul(1 << 20);
        if !bytes.is_multiple_of(bs) {
            return Err(BdevError::Invalid(format!(
                "split_size_mb: {} MiB is not a whole number of {bs}-byte blocks",
                opts.split_size_mb
            )));
        }
        let blocks = bytes / bs;
        if blocks.saturating_mul(u64::from(opts.split_count)) > base.num_blocks() {
            return Err(BdevError::Invalid(format!(
                "split_size_mb: {} parts of {} MiB do not fit in {} ({} blocks of {bs} bytes)",
                opts.split_count,
                opts.split_size_mb,
                opts.base_bdev,
                base.num_blocks()
            )));
        }
        blocks
    };
    if part_blocks == 0 {
        return Err(BdevError::Invalid(format!(
            "split_count: {} parts of {} leave no block for each",
            opts.split_count, opts.base_bdev
        )));
    }
    let names: Vec<String> = (0..opts.split_count)
        .map(|i| format!("{}p{i}", opts.base_bdev))
        .collect();
    if let Some(taken) = names.iter().find(|n| super::lookup(n).is_some()) {
        return Err(BdevError::Exists(taken.clone()));
    }
    let main = reactor::main_core();
    let (base_name, doomed) = (opts.base_bdev.clone(), names.clone());
    let desc = super::open(&opts.base_bdev, move |event| {
        if event == BdevEvent::Remove {
            let (base_name, doomed) = (base_name.clone(), doomed.clone());
            reactor::send_to(main, move || {
                GROUPS.with(|g| g.borrow_mut().remove(&base_name));
                for name in doomed {
                    super::unregister(&name, |r| {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "split part already gone");
                        }
                    });
                }
            });
        }
    })?;
    desc.claim(CLAIM)?;
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    let group = Arc::new(SplitGroup {
        id,
        base: desc.bdev().clone(),
        desc: Mutex::new(Some(desc)),
        split_count: opts.split_count,
        split_size_mb: opts.split_size_mb,
        live_parts: AtomicUsize::new(opts.split_count as usize),
    });
    let parts = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let i = i as u32;
            let mut info = BdevInfo::new(
                name,
                PRODUCT_NAME,
                base.block_size(),
                part_blocks,
                base.info.io_types,
            );
            info.optimal_io_boundary = base.info.optimal_io_boundary;
            info.uuid = part_uuid(base.info.uuid, i);
            let part = SplitBdev {
                group: group.clone(),
                index: i,
                offset_blocks: u64::from(i) * part_blocks,
            };
            (info, part)
        })
        .collect();
    Ok((group, parts))
}

/// Deletes every part of `base_bdev`'s split (main reactor); the base is released when the
/// last part is gone.
pub fn delete(base_bdev: &str, done: impl FnOnce(Result<(), BdevError>) + Send + 'static) {
    let Some((_, parts)) = GROUPS.with(|g| g.borrow_mut().remove(base_bdev)) else {
        return done(Err(BdevError::NotFound(format!("split of {base_bdev}"))));
    };
    delete_parts(parts.into_iter(), Box::new(done));
}

type DeleteDone = Box<dyn FnOnce(Result<(), BdevError>) + Send>;

fn delete_parts(mut parts: std::vec::IntoIter<String>, done: DeleteDone) {
    let Some(name) = parts.next() else {
        return done(Ok(()));
    };
    super::unregister(&name, move |r| {
        if let Err(e) = r {
            // Deleted on its own already (bdev_..._delete of a part): carry on.
            tracing::debug!(error = %e, "split part already gone");
        }
        delete_parts(parts, done)
    });
}

#[cfg(test)]
mod tests {
    use super::part_uuid;

    #[test]
    fn part_uuids_are_stable_distinct_and_well_formed() {
        let base = crate::bdev::parse_uuid("5b1e0cf4-0d7a-4bb2-8c67-6d7e4c6c0b0a").unwrap();
        let a: Vec<uuid::Uuid> = (0..64).map(|i| part_uuid(base, i)).collect();
        assert_eq!(a, (0..64).map(|i| part_uuid(base, i)).collect::<Vec<_>>());
        let mut d = a.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), a.len());
        assert!(a.iter().all(|u| *u != base && u.get_version_num() == 4));
        // The same UUIDs as when they were computed on strings (configs saved before keep
        // their parts' UUIDs).
        assert_eq!(
            part_uuid(base, 0).to_string(),
            "5b1e0cf4-0d7a-4bb2-8c67-6d7ed25b72b3"
        );
    }
}
