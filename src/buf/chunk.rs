//! Owned pieces of outgoing data: [`Chunk`] (an `IoBuf` slice, an inline header, or a range
//! of [`SharedBytes`]) and the raw shared-memory contract the socket layer sends from.
//!
//! These live with the buffers, below every consumer: storage (a malloc bdev's zero-copy
//! reads) and the NVMe/TCP codec (PDU headers as inline chunks) build them without knowing
//! the network, and the socket layer only hands their `(pointer, length)` to the kernel.

use super::IoBuf;
use std::sync::Arc;

/// Largest inline header a [`Chunk::Inline`] holds.
pub const INLINE_CAP: usize = 128;

/// Memory that can be sent from without copying and shared between owners (e.g. a RAM disk).
///
/// The contract is raw on purpose: the sock layer never reads this memory through a Rust
/// reference, it only hands `(as_ptr() + off, len)` to the kernel in an iovec (sendmsg or
/// io_uring), and the kernel copies (or, with MSG_ZEROCOPY, maps) the bytes. The owner may
/// therefore keep writing the same memory through raw pointers while a send is in flight (a
/// malloc bdev serving a write to blocks a read is still sending): the bytes sent are then
/// torn, like a disk's during overlapping I/O, and no `&[u8]` to racing memory ever exists.
/// Anyone who must read the bytes in Rust (a CRC, a test) copies them with raw copies or
/// owns memory no one else writes.
///
/// # Safety
/// `as_ptr()` must point to `len()` bytes that stay allocated, and at the same address, for
/// as long as `self` lives.
pub unsafe trait SharedBytes: Send + Sync + 'static {
    fn as_ptr(&self) -> *const u8;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// SAFETY: a Vec's heap buffer does not move while the Vec is shared immutably behind an Arc.
unsafe impl SharedBytes for Vec<u8> {
    fn as_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }
    fn len(&self) -> usize {
        self.as_slice().len()
    }
}

// SAFETY: as for Vec: the boxed slice stays where it is while shared.
unsafe impl SharedBytes for Box<[u8]> {
    fn as_ptr(&self) -> *const u8 {
        (**self).as_ptr()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
}

// SAFETY: an IoBuf owns its aligned allocation; it does not move while shared.
unsafe impl SharedBytes for IoBuf {
    fn as_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }
    fn len(&self) -> usize {
        self.as_slice().len()
    }
}

/// One owned piece of a write request.
pub enum Chunk {
    /// `len` bytes of an `IoBuf` starting at `off`.
    Buf { buf: IoBuf, off: usize, len: usize },
    /// A small header copied inline (at most [`INLINE_CAP`] bytes).
    Inline { data: [u8; INLINE_CAP], len: u8 },
    /// A range of shared memory.
    Shared {
        mem: Arc<dyn SharedBytes>,
        off: usize,
        len: usize,
    },
}

impl Chunk {
    /// The whole buffer.
    pub fn buf(buf: IoBuf) -> Self {
        let len = buf.len();
        Chunk::Buf { buf, off: 0, len }
    }

    /// A header of at most [`INLINE_CAP`] bytes; `None` if it is longer.
    pub fn inline(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > INLINE_CAP {
            return None;
        }
        let mut data = [0u8; INLINE_CAP];
        data[..bytes.len()].copy_from_slice(bytes);
        Some(Chunk::Inline {
            data,
            len: bytes.len() as u8,
        })
    }

    /// Where the bytes this chunk sends start, and how many there are. Out-of-range
    /// ranges are clamped to the memory that exists. A raw pointer because shared memory
    /// may be written concurrently (see [`SharedBytes`]): only the kernel reads it.
    pub fn raw_parts(&self) -> (*const u8, usize) {
        fn clamp(mem_len: usize, off: usize, len: usize) -> (usize, usize) {
            let start = off.min(mem_len);
            let end = off.saturating_add(len).min(mem_len);
            (start, end - start)
        }
        match self {
            Chunk::Buf { buf, off, len } => {
                let (start, n) = clamp(buf.len(), *off, *len);
                (buf[start..].as_ptr(), n)
            }
            Chunk::Inline { data, len } => (data.as_ptr(), (*len as usize).min(INLINE_CAP)),
            Chunk::Shared { mem, off, len } => {
                let (start, n) = clamp(mem.len(), *off, *len);
                // `start <= mem.len()`, so the pointer stays within (or one past) the memory.
                (mem.as_ptr().wrapping_add(start), n)
            }
        }
    }

    /// The bytes of an owned chunk (`Buf` or `Inline`); `None` for shared memory, which may
    /// be written concurrently and is never read through a reference.
    pub fn owned_bytes(&self) -> Option<&[u8]> {
        match self {
            Chunk::Buf { buf, off, len } => {
                let start = (*off).min(buf.len());
                let end = off.saturating_add(*len).min(buf.len());
                Some(&buf[start..end])
            }
            Chunk::Inline { data, len } => Some(&data[..(*len as usize).min(INLINE_CAP)]),
            Chunk::Shared { .. } => None,
        }
    }

    /// Appends the chunk's bytes to `out` (shared memory is copied with a raw copy: the
    /// bytes may be torn by a concurrent writer, exactly as the kernel would have sent them).
    pub fn append_to(&self, out: &mut Vec<u8>) {
        if let Some(b) = self.owned_bytes() {
            out.extend_from_slice(b);
            return;
        }
        let (ptr, len) = self.raw_parts();
        out.reserve(len);
        let at = out.len();
        // SAFETY: `raw_parts` is clamped to memory the chunk keeps allocated (SharedBytes'
        // contract); `reserve` made room for `len` bytes after `at`, which the copy
        // initialises before `set_len` exposes them; no reference to the shared memory exists.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr, out.as_mut_ptr().add(at), len);
            out.set_len(at + len);
        }
    }

    pub fn len(&self) -> usize {
        self.raw_parts().1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
