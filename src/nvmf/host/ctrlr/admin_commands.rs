//! The controller's admin commands: properties, Identify, logs, features, Keep Alive, the discovery log.

use super::Controller;
use crate::buf::IoBuf;
use crate::nvmf::host::qpair::{DataBuf, Request};
use crate::nvmf::host::{HostError, OnDone};
use crate::nvmf::wire::{
    admin_opc, cns, log_id, prop, DiscoveryLogEntry, DiscoveryLogHeader, FabricsCommand,
    FeaturesCmd, GetLogPageCmd, IdentifyCmd, IdentifyController, IdentifyNamespace, PropertyGetCmd,
    PropertySetCmd, SglDescriptor, Sqe,
};

impl Controller {
    pub fn property_get(&self, offset: u32, cb: impl OnDone<u64>) {
        let sqe = FabricsCommand::PropertyGet(PropertyGetCmd {
            cid: 0,
            size8: prop::is_8_bytes(offset),
            offset,
        })
        .to_sqe();
        self.submit(0, Request::new(sqe, DataBuf::None), move |c| {
            cb(c.status_and(|cqe| cqe.result64()))
        });
    }

    pub fn property_set(&self, offset: u32, value: u64, cb: impl OnDone<()>) {
        let sqe = FabricsCommand::PropertySet(PropertySetCmd {
            cid: 0,
            size8: prop::is_8_bytes(offset),
            offset,
            value,
        })
        .to_sqe();
        self.command(0, Request::new(sqe, DataBuf::None), move |r| {
            cb(r.map(|_| ()))
        });
    }

    /// Identify with `cns` for `nsid`: the 4096-byte data.
    pub fn identify(&self, cns: u8, nsid: u32, cb: impl OnDone<IoBuf>) {
        let sqe = IdentifyCmd {
            nsid,
            cns,
            cntid: 0,
            csi: 0,
        }
        .to_sqe(0, SglDescriptor::default());
        let buf = IoBuf::zeroed(4096);
        self.command(0, Request::new(sqe, DataBuf::Read(buf)), move |r| {
            cb(r.and_then(|(_, b)| b.ok_or_else(|| HostError::Protocol("no data".into()))))
        });
    }

    pub fn identify_controller(&self, cb: impl OnDone<IdentifyController>) {
        self.identify(cns::CONTROLLER, 0, move |r| {
            cb(r.map(|b| IdentifyController::decode_slice(&b).unwrap_or_default()))
        });
    }

    pub fn identify_namespace(&self, nsid: u32, cb: impl OnDone<IdentifyNamespace>) {
        self.identify(cns::NAMESPACE, nsid, move |r| {
            cb(r.map(|b| IdentifyNamespace::decode_slice(&b).unwrap_or_default()))
        });
    }

    /// The active namespace ids (CNS 02h from nsid 0).
    pub fn active_namespaces(&self, cb: impl OnDone<Vec<u32>>) {
        self.identify(cns::ACTIVE_NS_LIST, 0, move |r| {
            cb(r.map(|b| {
                b.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .take_while(|&n| n != 0)
                    .collect()
            }))
        });
    }

    /// Get Log Page: `len` bytes (a multiple of 4) of log `lid` at byte `offset`.
    pub fn get_log_page(&self, lid: u8, nsid: u32, offset: u64, len: u32, cb: impl OnDone<IoBuf>) {
        if len == 0 || !len.is_multiple_of(4) {
            return cb(Err(HostError::Invalid(format!(
                "log page length {len} is not a non-zero multiple of 4"
            ))));
        }
        let sqe = GetLogPageCmd::new(nsid, lid, offset, len).to_sqe(0, SglDescriptor::default());
        self.command(0, Request::new(sqe, DataBuf::Read(IoBuf::zeroed(len as usize))), move |r| {
            cb(r.and_then(|(_, b)| b.ok_or_else(|| HostError::Protocol("no data".into()))))
        });
    }

    /// Get Features `fid` (current value): DW0.
    pub fn get_features(&self, fid: u8, cdw11: u32, cb: impl OnDone<u32>) {
        self.features(admin_opc::GET_FEATURES, fid, cdw11, cb)
    }

    /// Set Features `fid` to `cdw11`: DW0 of the completion.
    pub fn set_features(&self, fid: u8, cdw11: u32, cb: impl OnDone<u32>) {
        self.features(admin_opc::SET_FEATURES, fid, cdw11, cb)
    }

    /// Get or Set Features (`opcode`) of the controller's feature `fid`: DW0.
    fn features(&self, opcode: u8, fid: u8, cdw11: u32, cb: impl OnDone<u32>) {
        let sqe = FeaturesCmd {
            nsid: 0,
            fid,
            sel: 0,
            save: false,
            cdw11,
        }
        .to_sqe(opcode, 0);
        self.command(0, Request::new(sqe, DataBuf::None), move |r| {
            cb(r.map(|(dw0, _)| dw0))
        });
    }

    pub fn keep_alive(&self, cb: impl OnDone<()>) {
        let sqe = Sqe::new(admin_opc::KEEP_ALIVE, 0, 0);
        self.command(0, Request::new(sqe, DataBuf::None), move |r| {
            cb(r.map(|_| ()))
        });
    }

    /// The discovery log (header and entries), read whole and re-read if its generation
    /// counter changed meanwhile.
    pub fn discovery_log(&self, cb: impl OnDone<(DiscoveryLogHeader, Vec<DiscoveryLogEntry>)>) {
        let c = self.rc();
        let max = self
            .inner
            .borrow()
            .info
            .as_ref()
            .map_or(128 * 1024, |i| i.max_transfer);
        self.get_log_page(log_id::DISCOVERY, 0, 0, 4096, move |r| {
            let first = match r {
                Ok(b) => DiscoveryLogHeader::decode_slice(&b).unwrap_or_default(),
                Err(e) => return cb(Err(e)),
            };
            let fits = (max as u64 / 1024).saturating_sub(1);
            let numrec = first.numrec.min(fits.into());
            let len = (1024 * (numrec + 1)).get() as u32;
            c.get_log_page(log_id::DISCOVERY, 0, 0, len, move |r| {
                let b = match r {
                    Ok(b) => b,
                    Err(e) => return cb(Err(e)),
                };
                match crate::nvmf::wire::decode_discovery_log(&b) {
                    Some((hdr, _)) if hdr.genctr != first.genctr => cb(Err(HostError::Protocol(
                        "discovery log changed while being read".into(),
                    ))),
                    Some(x) => cb(Ok(x)),
                    None => cb(Err(HostError::Protocol("short discovery log".into()))),
                }
            });
        });
    }
}
