//! In-capsule write data received by the socket read straight into the commands' buffers.
//!
//! Landing in-capsule write data once: the receive side of a queue pair that sees a stream
//! of write capsules of one shape (same header length, data length and digests, as a load
//! of 4 KiB writes sends) speculates that the next PDUs have that shape too, and receives
//! with one `readv` whose iovecs put each expected capsule's header in a small header slot,
//! its data straight into an `IoBuf` that becomes the command's buffer (and then the bdev
//! write's), its data digest in the slot, and whatever follows into the staging buffer's
//! tail. A queue with `free` request slots can receive at most `free` new capsules, so
//! when the staging buffer has room for all of them the tail stays empty and the receive
//! ends at a PDU boundary, where the next one can speculate again; the tail only makes the
//! receive as long as the staging buffer (the posix sock then bypasses its receive pipe,
//! which would add a copy). The caller checks every received header against the shape before trusting the
//! layout ([`CapsuleShape::matches`]); at the first PDU that differs it copies the rest back
//! into the staging buffer in wire order ([`Landing::linearize`]) and decodes as usual, and
//! the speculation stops until a new streak of same-shaped capsules builds up. So a mixed
//! stream costs at most one extra copy of one receive, and a write stream lands its data
//! with no copy at all between the kernel and the bdev. Buffers come from the `IoBuf` cache
//! and unused ones are kept for the next receive: nothing is allocated per I/O.

use crate::buf::{copy_bytes, IoBuf};
use crate::nvmf::pdu::{pdu_type, CommonHeader, PduFlags, CAPSULE_CMD_HLEN};
use crate::sock::Sock;
use std::io::{self, IoSliceMut};
use zerocopy::FromBytes;

/// Capsules landed by one receive at most (a queue depth of 32 of 4 KiB writes).
pub const LANDING_MAX: usize = 32;
/// Same-shaped write capsules in a row before receives speculate.
const LANDING_STREAK: u32 = 4;
/// Longest capsule header (through PDO) that is speculated on (a command capsule with a
/// header digest takes 76 bytes; only a large host PDA makes it longer).
const MAX_LANDED_PDO: usize = 128;
/// Bytes of one header slot: the header (through PDO) and a data digest.
pub const HDR_SLOT: usize = MAX_LANDED_PDO + DIGEST_LEN;
const DIGEST_LEN: usize = crate::nvmf::digest::DIGEST_LEN;

/// The layout of an in-capsule write PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsuleShape {
    /// Bytes before the data (header, header digest, padding).
    pub pdo: usize,
    pub data_len: usize,
    pub ddgst: bool,
}

impl CapsuleShape {
    fn digest_len(&self) -> usize {
        if self.ddgst {
            DIGEST_LEN
        } else {
            0
        }
    }

    /// Bytes of the whole PDU.
    pub fn pdu_len(&self) -> usize {
        self.pdo + self.data_len + self.digest_len()
    }

    /// Whether `hdr` (the first received bytes of a PDU) starts a capsule of this shape:
    /// command capsule type, header length, PDO, PDU length and data digest flag. Fewer
    /// than the common header's 8 bytes never match.
    pub fn matches(&self, hdr: &[u8]) -> bool {
        let Ok((ch, _)) = CommonHeader::ref_from_prefix(hdr) else {
            return false;
        };
        ch.pdu_type == pdu_type::CAPSULE_CMD
            && ch.hlen as usize == CAPSULE_CMD_HLEN
            && ch.pdo as usize == self.pdo
            && ch.plen.get() as usize == self.pdu_len()
            && ch.flags.contains(PduFlags::DDGSTF) == self.ddgst
    }
}

/// What one landing receive got: `n` bytes over `count` speculated capsules, then the
/// start of the staging buffer.
#[derive(Debug, Clone, Copy)]
pub struct Landed {
    pub n: usize,
    pub count: usize,
    pub shape: CapsuleShape,
}

impl Landed {
    /// Bytes that went into the staging buffer's tail.
    pub fn tail_bytes(&self) -> usize {
        self.n.saturating_sub(self.count * self.shape.pdu_len())
    }
}

/// Per-queue state of the speculation.
#[derive(Default)]
pub struct Landing {
    shape: Option<CapsuleShape>,
    streak: u32,
    /// Data buffers of the capsules of the current receive, the next one last.
    bufs: Vec<IoBuf>,
    /// Buffers ready for the next receive.
    spare: Vec<IoBuf>,
    /// Header slots, `HDR_SLOT` bytes each.
    hdrs: Vec<u8>,
    /// The buffer of the capsule whose header is being handled (see `take_buffer`).
    current: Option<IoBuf>,
}

impl Landing {
    /// Notes the shape of a received PDU header (`None`: not an in-capsule write).
    pub fn observe(&mut self, shape: Option<CapsuleShape>) {
        match shape {
            Some(s) if self.shape == Some(s) => self.streak = self.streak.saturating_add(1),
            Some(s) if s.pdo <= MAX_LANDED_PDO => {
                self.shape = Some(s);
                self.streak = 1;
            }
            _ => self.streak = 0,
        }
    }

    /// How many capsules the next receive should land (0: receive normally).
    pub fn plan(&self, free_slots: usize, rx_len: usize) -> usize {
        let Some(shape) = self.shape else { return 0 };
        if self.streak < LANDING_STREAK {
            return 0;
        }
        // What was received must fit the staging buffer if it has to be linearized.
        let room = rx_len / shape.pdu_len().max(1);
        (self.streak as usize)
            .min(free_slots)
            .min(LANDING_MAX)
            .min(room)
    }

    /// Receives with iovecs for `count` capsules of the current shape and the staging
    /// buffer's tail (`rx` minus the capsules' bytes, so the total fits `rx` if it must
    /// be linearized).
    pub fn receive(
        &mut self,
        count: usize,
        sock: &mut dyn Sock,
        rx: &mut [u8],
    ) -> io::Result<Landed> {
        let Some(shape) = self.shape else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let count = count.min(LANDING_MAX);
        self.release_all();
        if self.hdrs.len() < LANDING_MAX * HDR_SLOT {
            self.hdrs.resize(LANDING_MAX * HDR_SLOT, 0);
        }
        while self.bufs.len() < count {
            let b = match self.spare.pop() {
                Some(b) if b.len() == shape.data_len => b,
                _ => IoBuf::with_len(shape.data_len),
            };
            self.bufs.push(b);
        }
        let tail_cap = rx.len().saturating_sub(count * shape.pdu_len());
        let mut iov: [IoSliceMut<'_>; 3 * LANDING_MAX + 1] =
            std::array::from_fn(|_| IoSliceMut::new(&mut []));
        let mut n_iov = 0;
        // The next capsule's buffer is the last one: iovecs take them in reverse.
        for (buf, slot) in self
            .bufs
            .iter_mut()
            .rev()
            .zip(self.hdrs.chunks_mut(HDR_SLOT))
        {
            let (hdr, rest) = slot.split_at_mut(shape.pdo);
            iov[n_iov] = IoSliceMut::new(hdr);
            iov[n_iov + 1] = IoSliceMut::new(buf.as_mut_slice());
            n_iov += 2;
            if shape.ddgst {
                iov[n_iov] = IoSliceMut::new(&mut rest[..DIGEST_LEN]);
                n_iov += 1;
            }
        }
        iov[n_iov] = IoSliceMut::new(&mut rx[..tail_cap]);
        n_iov += 1;
        let n = sock.readv(&mut iov[..n_iov])?;
        Ok(Landed { n, count, shape })
    }

    /// Header slot `i` of the current receive (header bytes, then the data digest).
    pub fn header_slot(&self, i: usize) -> &[u8] {
        &self.hdrs[i * HDR_SLOT..(i + 1) * HDR_SLOT]
    }

    /// Moves the next capsule's buffer to `current`, where the capsule's header handling
    /// takes it with [`Landing::take_buffer`].
    pub fn arm_next(&mut self) {
        if let Some(b) = self.current.take() {
            self.keep_spare(b);
        }
        self.current = self.bufs.pop();
    }

    /// The landed buffer of the capsule being handled, if it has `len` bytes.
    pub fn take_buffer(&mut self, len: usize) -> Option<IoBuf> {
        match self.current.take() {
            Some(b) if b.len() == len => Some(b),
            Some(b) => {
                self.current = Some(b);
                None
            }
            None => None,
        }
    }

    /// Takes back the current buffer when the header handling did not take it.
    pub fn take_current(&mut self) -> Option<IoBuf> {
        self.current.take()
    }

    /// Keeps a buffer for a later receive.
    pub fn keep_spare(&mut self, b: IoBuf) {
        if self.spare.len() < LANDING_MAX {
            self.spare.push(b);
        }
    }

    /// Stops speculating until a new streak builds up.
    pub fn stop(&mut self) {
        self.streak = 0;
    }

    /// Returns every buffer of the current receive to the spares.
    pub fn release_all(&mut self) {
        if let Some(b) = self.current.take() {
            self.keep_spare(b);
        }
        while let Some(b) = self.bufs.pop() {
            self.keep_spare(b);
        }
    }

    /// Copies the bytes a receive placed from capsule `from` on (its first `skip` bytes
    /// already consumed) back into `rx` in wire order, the tail bytes after them, and
    /// returns how many bytes `rx` now holds. `from`'s data buffer must still be
    /// `current` (or untouched in `bufs`); the later ones are in `bufs`.
    pub fn linearize(&mut self, landed: &Landed, from: usize, skip: usize, rx: &mut [u8]) -> usize {
        let shape = landed.shape;
        let tail = landed.tail_bytes();
        let placed = landed.n - tail;
        let start = from * shape.pdu_len() + skip;
        let m = placed.saturating_sub(start);
        rx.copy_within(..tail, m);
        // The capsules' pieces in wire order, cut to the bytes received.
        let mut at = 0;
        let mut wire = from * shape.pdu_len();
        let current = self.current.take();
        let later = self.bufs.iter().rev();
        for (i, data) in (from..landed.count).zip(current.iter().chain(later)) {
            let slot = &self.hdrs[i * HDR_SLOT..(i + 1) * HDR_SLOT];
            let pieces: [&[u8]; 3] = [
                &slot[..shape.pdo],
                &data[..],
                &slot[shape.pdo..shape.pdo + shape.digest_len()],
            ];
            for piece in pieces {
                let lo = start.max(wire) - wire;
                let hi = piece.len().min(placed.saturating_sub(wire));
                if lo < hi {
                    copy_bytes(&mut rx[at..at + hi - lo], &piece[lo..hi]);
                    at += hi - lo;
                }
                wire += piece.len();
            }
        }
        if let Some(b) = current {
            self.keep_spare(b);
        }
        self.release_all();
        self.stop();
        debug_assert_eq!(at, m);
        m + tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvmf::pdu::CH_LEN;
    use zerocopy::IntoBytes;

    fn shape() -> CapsuleShape {
        CapsuleShape {
            pdo: 72,
            data_len: 4096,
            ddgst: true,
        }
    }

    fn header(shape: &CapsuleShape) -> Vec<u8> {
        let mut h = vec![0u8; shape.pdo];
        let ch = CommonHeader {
            pdu_type: pdu_type::CAPSULE_CMD,
            flags: if shape.ddgst {
                PduFlags::DDGSTF
            } else {
                PduFlags::empty()
            },
            hlen: CAPSULE_CMD_HLEN as u8,
            pdo: shape.pdo as u8,
            plen: (shape.pdu_len() as u32).into(),
        };
        h[..CH_LEN].copy_from_slice(ch.as_bytes());
        h
    }

    #[test]
    fn shape_matches_only_its_own_headers() {
        let s = shape();
        let h = header(&s);
        assert!(s.matches(&h));
        assert!(!s.matches(&h[..7]));
        let ch = |b: &mut Vec<u8>| -> CommonHeader {
            CommonHeader::read_from_prefix(b)
                .expect("a common header")
                .0
        };
        let set = |b: &mut Vec<u8>, c: CommonHeader| b[..CH_LEN].copy_from_slice(c.as_bytes());
        let mut other = h.clone();
        let mut c = ch(&mut other);
        c.plen = ((s.pdu_len() + 512) as u32).into();
        set(&mut other, c);
        assert!(!s.matches(&other));
        let mut no_digest = h.clone();
        let mut c = ch(&mut no_digest);
        c.flags = PduFlags::empty();
        set(&mut no_digest, c);
        assert!(!s.matches(&no_digest));
        let mut resp = h;
        let mut c = ch(&mut resp);
        c.pdu_type = pdu_type::CAPSULE_RESP;
        set(&mut resp, c);
        assert!(!s.matches(&resp));
    }

    #[test]
    fn speculation_needs_a_streak_and_room() {
        let mut l = Landing::default();
        let s = shape();
        for _ in 0..LANDING_STREAK - 1 {
            l.observe(Some(s));
        }
        assert_eq!(l.plan(32, 64 * 1024), 0);
        l.observe(Some(s));
        assert_eq!(l.plan(32, 64 * 1024), LANDING_STREAK as usize);
        for _ in 0..20 {
            l.observe(Some(s));
        }
        // 64 KiB / 4172-byte PDUs = 15 capsules.
        assert_eq!(l.plan(32, 64 * 1024), 15);
        assert_eq!(l.plan(3, 64 * 1024), 3);
        l.observe(None);
        assert_eq!(l.plan(32, 64 * 1024), 0);
    }

    #[test]
    fn linearize_restores_wire_order() {
        let s = CapsuleShape {
            pdo: 8,
            data_len: 16,
            ddgst: true,
        };
        let mut l = Landing::default();
        for _ in 0..LANDING_STREAK {
            l.observe(Some(s));
        }
        // Two capsules (28 bytes each) then a tail: fill pieces as a readv would.
        let wire: Vec<u8> = (0..70u8).collect();
        l.hdrs.resize(LANDING_MAX * HDR_SLOT, 0);
        l.bufs = vec![IoBuf::with_len(16), IoBuf::with_len(16)];
        let mut rx = vec![0u8; 128];
        let mut pos = 0;
        for i in 0..2 {
            let slot = &mut l.hdrs[i * HDR_SLOT..];
            slot[..8].copy_from_slice(&wire[pos..pos + 8]);
            let data = &mut l.bufs[1 - i];
            data.as_mut_slice()
                .copy_from_slice(&wire[pos + 8..pos + 24]);
            slot[8..12].copy_from_slice(&wire[pos + 24..pos + 28]);
            pos += 28;
        }
        rx[..14].copy_from_slice(&wire[56..70]);
        let landed = Landed {
            n: 70,
            count: 2,
            shape: s,
        };
        // The first capsule's header (8 bytes) was consumed; its buffer is current.
        l.arm_next();
        let len = l.linearize(&landed, 0, 8, &mut rx);
        assert_eq!(&rx[..len], &wire[8..70]);
        assert_eq!(l.plan(32, 128), 0, "a fallback stops the speculation");
    }
}
