//! NVMe I/O commands mapped to bdev I/O.
//!
//! NVMe I/O commands mapped to bdev I/O: Read, Write, Compare, Flush, Write Zeroes and
//! Dataset Management (deallocate → unmap); the fused Compare and Write pair becomes one
//! bdev compare-and-write (see [`fused_status`]). [`plan`] validates a command against its namespace
//! (block size and count, transfer length, transport limits) and says which bdev
//! operations execute it, or with which exact NVMe status it fails; the transport then
//! submits them on the reactor's channel and maps each bdev completion back with
//! [`status_of`]. Pure functions of the command, so the dispatcher can be fuzzed.

use super::wire::{self, io_opc, DataDirection, Sqe, Status};
use crate::bdev::{IoStatus, IoType};

/// What the transport needs to know about a namespace on this reactor.
#[derive(Debug, Clone, Copy)]
pub struct NsGeometry {
    pub block_size: u32,
    pub num_blocks: u64,
    pub supports_flush: bool,
    pub supports_unmap: bool,
    pub supports_write_zeroes: bool,
}

/// The bdev work of one NVMe I/O command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoPlan {
    /// Read `num_blocks` at `offset_blocks` into a buffer of `len` bytes, then C2H it.
    Read {
        offset_blocks: u64,
        num_blocks: u64,
        len: usize,
    },
    /// Write the received data (`len` bytes) at `offset_blocks`.
    Write {
        offset_blocks: u64,
        num_blocks: u64,
        len: usize,
    },
    /// Compare the received data (`len` bytes) with the blocks at `offset_blocks`.
    Compare {
        offset_blocks: u64,
        num_blocks: u64,
        len: usize,
    },
    Flush,
    WriteZeroes {
        offset_blocks: u64,
        num_blocks: u64,
    },
    /// Unmap each (offset, blocks) range.
    Unmap(Vec<(u64, u64)>),
    /// Nothing to do: complete successfully (e.g. DSM without deallocate, flush of a
    /// device without a cache).
    Nothing,
}

/// The data a command moves, from its opcode (reads: controller to host).
pub fn direction(sqe: &Sqe) -> DataDirection {
    sqe.data_direction()
}

/// Validates `sqe` for a namespace (`None`: no such active namespace) with `xfer_len` bytes
/// described by its SGL and `data` (the host data received for write-like commands).
pub fn plan(
    sqe: &Sqe,
    ns: Option<&NsGeometry>,
    xfer_len: u32,
    max_io_size: u32,
    data: &[u8],
) -> Result<IoPlan, Status> {
    let Some(ns) = ns else {
        return Err(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
    };
    let range = || -> Result<(u64, u64, usize), Status> {
        let (slba, blocks) = lba_range(sqe, ns)?;
        let len = blocks * ns.block_size as u64;
        if len > max_io_size as u64 {
            return Err(Status::INVALID_FIELD.with_dnr());
        }
        if len > xfer_len as u64 {
            return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
        }
        Ok((slba, blocks, len as usize))
    };
    match sqe.opcode {
        io_opc::READ => {
            let (offset_blocks, num_blocks, len) = range()?;
            Ok(IoPlan::Read {
                offset_blocks,
                num_blocks,
                len,
            })
        }
        io_opc::WRITE => {
            let (offset_blocks, num_blocks, len) = range()?;
            Ok(IoPlan::Write {
                offset_blocks,
                num_blocks,
                len,
            })
        }
        io_opc::COMPARE => {
            let (offset_blocks, num_blocks, len) = range()?;
            Ok(IoPlan::Compare {
                offset_blocks,
                num_blocks,
                len,
            })
        }
        io_opc::FLUSH => Ok(if ns.supports_flush {
            IoPlan::Flush
        } else {
            IoPlan::Nothing
        }),
        io_opc::WRITE_ZEROES => {
            let (slba, blocks) = lba_range(sqe, ns)?;
            if !ns.supports_write_zeroes {
                return Err(Status::INVALID_OPCODE.with_dnr());
            }
            Ok(IoPlan::WriteZeroes {
                offset_blocks: slba,
                num_blocks: blocks,
            })
        }
        io_opc::DATASET_MANAGEMENT => {
            let nr = sqe.cdw10.get() as u8;
            let Some(ranges) = wire::decode_dsm_ranges(data, nr) else {
                return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
            };
            if sqe.cdw11 & wire::dsm::DEALLOCATE == 0 || !ns.supports_unmap {
                return Ok(IoPlan::Nothing);
            }
            let mut out = Vec::with_capacity(ranges.len());
            for r in ranges.iter().filter(|r| r.nlb > 0) {
                if r.slba
                    .get()
                    .checked_add(r.nlb.get() as u64)
                    .is_none_or(|e| e > ns.num_blocks)
                {
                    return Err(Status::LBA_OUT_OF_RANGE.with_dnr());
                }
                out.push((r.slba.get(), r.nlb.get() as u64));
            }
            Ok(if out.is_empty() {
                IoPlan::Nothing
            } else {
                IoPlan::Unmap(out)
            })
        }
        _ => Err(Status::INVALID_OPCODE.with_dnr()),
    }
}

/// Validates a fused Compare (`first`) and Write (`second`) for a namespace, each with its
/// transfer length: the blocks and data length of the compare-and-write, or the statuses
/// of the two commands (NVMe base spec, Fused Operations: the one that is wrong gets its
/// error, the other Command Aborted due to Failed Fused Command; both Invalid Field when
/// they name different namespaces or LBA ranges).
pub fn plan_fused(
    first: &Sqe,
    second: &Sqe,
    ns: Option<&NsGeometry>,
    xfers: (u32, u32),
    max_io_size: u32,
) -> Result<(u64, u64, usize), (Status, Status)> {
    let failed = Status::ABORTED_FAILED_FUSED;
    if first.opcode != io_opc::COMPARE {
        return Err((Status::INVALID_OPCODE.with_dnr(), failed));
    }
    if second.opcode != io_opc::WRITE {
        return Err((failed, Status::INVALID_OPCODE.with_dnr()));
    }
    if first.nsid != second.nsid || first.slba() != second.slba() || first.nlb() != second.nlb() {
        let st = Status::INVALID_FIELD.with_dnr();
        return Err((st, st));
    }
    let cmp = plan(first, ns, xfers.0, max_io_size, &[]).map_err(|st| (st, failed))?;
    let write = plan(second, ns, xfers.1, max_io_size, &[]).map_err(|st| (failed, st))?;
    match (cmp, write) {
        (
            IoPlan::Compare {
                offset_blocks,
                num_blocks,
                len,
            },
            IoPlan::Write { .. },
        ) => Ok((offset_blocks, num_blocks, len)),
        _ => Err((Status::INTERNAL_ERROR, failed)),
    }
}

/// The statuses of a fused Compare and Write from its compare-and-write's completion:
/// data that differ fail the Compare (Compare Failure) and abort the Write (Failed Fused
/// Command); any other error is the Compare's (the pair failed as one) and aborts the
/// Write.
pub fn fused_status(s: IoStatus) -> (Status, Status) {
    match s {
        IoStatus::Success => (Status::SUCCESS, Status::SUCCESS),
        other => (status_of(other), Status::ABORTED_FAILED_FUSED),
    }
}

/// The (SLBA, block count) of a read/write-like command, checked against the namespace
/// (overflow included).
fn lba_range(sqe: &Sqe, ns: &NsGeometry) -> Result<(u64, u64), Status> {
    let blocks = sqe.nlb() as u64;
    let slba = sqe.slba();
    if slba
        .checked_add(blocks)
        .is_none_or(|end| end > ns.num_blocks)
    {
        return Err(Status::LBA_OUT_OF_RANGE.with_dnr());
    }
    Ok((slba, blocks))
}

/// The NVMe status of a bdev completion.
pub fn status_of(s: IoStatus) -> Status {
    let n = s.nvme();
    let st = Status::new(n.sct, n.sc);
    if n.dnr {
        st.with_dnr()
    } else {
        st
    }
}

/// The bdev I/O type of a plan step.
pub fn io_type(plan: &IoPlan) -> Option<IoType> {
    Some(match plan {
        IoPlan::Read { .. } => IoType::Read,
        IoPlan::Write { .. } => IoType::Write,
        IoPlan::Compare { .. } => IoType::Compare,
        IoPlan::Flush => IoType::Flush,
        IoPlan::WriteZeroes { .. } => IoType::WriteZeroes,
        IoPlan::Unmap(_) => IoType::Unmap,
        IoPlan::Nothing => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvmf::wire::SglDescriptor;

    const NS: NsGeometry = NsGeometry {
        block_size: 512,
        num_blocks: 1000,
        supports_flush: true,
        supports_unmap: true,
        supports_write_zeroes: true,
    };

    fn rw(op: u8, slba: u64, blocks: u32) -> Sqe {
        Sqe::rw(
            op,
            1,
            1,
            slba,
            blocks,
            SglDescriptor::transport_data_block(blocks * 512),
        )
    }

    #[test]
    fn reads_and_writes_check_range_and_lengths() {
        let r = plan(&rw(io_opc::READ, 10, 8), Some(&NS), 4096, 131072, &[]).unwrap();
        assert_eq!(
            r,
            IoPlan::Read {
                offset_blocks: 10,
                num_blocks: 8,
                len: 4096
            }
        );
        let e = plan(&rw(io_opc::WRITE, 995, 8), Some(&NS), 4096, 131072, &[]).unwrap_err();
        assert!(e.same_code(Status::LBA_OUT_OF_RANGE) && e.dnr());
        let e = plan(&rw(io_opc::READ, u64::MAX, 8), Some(&NS), 4096, 131072, &[]).unwrap_err();
        assert!(e.same_code(Status::LBA_OUT_OF_RANGE));
        let e = plan(&rw(io_opc::READ, 0, 8), Some(&NS), 2048, 131072, &[]).unwrap_err();
        assert!(e.same_code(Status::DATA_SGL_LENGTH_INVALID));
        let e = plan(&rw(io_opc::READ, 0, 8), Some(&NS), 4096, 2048, &[]).unwrap_err();
        assert!(e.same_code(Status::INVALID_FIELD));
        let e = plan(&rw(io_opc::READ, 0, 8), None, 4096, 131072, &[]).unwrap_err();
        assert!(e.same_code(Status::INVALID_NAMESPACE_OR_FORMAT));
        let e = plan(&rw(0x7e, 0, 8), Some(&NS), 4096, 131072, &[]).unwrap_err();
        assert!(e.same_code(Status::INVALID_OPCODE));
    }

    #[test]
    fn dsm_deallocate_becomes_unmaps() {
        let mut data = vec![0u8; 32];
        data[4..8].copy_from_slice(&8u32.to_le_bytes());
        data[8..16].copy_from_slice(&100u64.to_le_bytes());
        data[16 + 8..32].copy_from_slice(&5u64.to_le_bytes());
        let mut sqe = Sqe::new(io_opc::DATASET_MANAGEMENT, 1, 1);
        sqe.cdw10 = 1.into();
        sqe.cdw11 = wire::dsm::DEALLOCATE.into();
        assert_eq!(
            plan(&sqe, Some(&NS), 32, 131072, &data).unwrap(),
            IoPlan::Unmap(vec![(100, 8)])
        );
        let e = plan(&sqe, Some(&NS), 16, 131072, &data[..16]).unwrap_err();
        assert!(e.same_code(Status::DATA_SGL_LENGTH_INVALID));
        data[8..16].copy_from_slice(&999u64.to_le_bytes());
        let e = plan(&sqe, Some(&NS), 32, 131072, &data).unwrap_err();
        assert!(e.same_code(Status::LBA_OUT_OF_RANGE));
        sqe.cdw11 = 0.into();
        assert_eq!(
            plan(&sqe, Some(&NS), 32, 131072, &data).unwrap(),
            IoPlan::Nothing
        );
    }

    #[test]
    fn bdev_statuses_map_to_nvme() {
        assert!(status_of(IoStatus::Success).is_success());
        assert!(status_of(IoStatus::InvalidLbaRange).same_code(Status::LBA_OUT_OF_RANGE));
        assert!(status_of(IoStatus::Failed).same_code(Status::INTERNAL_ERROR));
    }
}
