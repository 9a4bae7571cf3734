//! The NVMe and NVMe/TCP wire layer: every structure that crosses the network, and the codec.
//!
//! Pure code with no I/O: it imports nothing from the sockets, the bdevs or the target, so
//! the target, the host and the fuzzers all drive the same types. `nvme` holds the base
//! structures (opcodes, status codes, SGL descriptor, SQE, CQE, admin / I/O command fields),
//! `fabrics` the NVMe over Fabrics commands and controller properties, `identify` the
//! Identify data, `log` the log pages, `tcp` the NVMe/TCP PDU header layouts, `pdu` the
//! PDU encoder and the incremental, limit-checking decoder, and `digest` the CRC32C header
//! and data digests. Field names follow the specification's abbreviations so they can be
//! looked up there.

pub mod digest;
pub mod fabrics;
pub mod identify;
pub mod log;
pub mod nvme;
pub mod pdu;
pub mod tcp;
#[cfg(test)]
mod tests;

pub use fabrics::*;
pub use identify::*;
pub use log::*;
pub use nvme::*;

#[allow(unused_imports)]
use zerocopy::little_endian::{U128, U16, U32, U64};
#[allow(unused_imports)]
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Gives `#[repr(C)]` zerocopy wire types their size check and byte conversions: `SIZE`,
/// `to_bytes`, `encode`, `decode`, `decode_slice` and an all-zero `Default`. The layout is
/// the struct's; no offset is written here.
macro_rules! wire_layout {
    ($($t:ty = $size:expr),* $(,)?) => {$(
        const _: () = assert!(::core::mem::size_of::<$t>() == $size);

        impl $t {
            /// Size in bytes on the wire.
            pub const SIZE: usize = $size;

            /// The bytes as sent.
            pub fn to_bytes(&self) -> [u8; $size] {
                ::zerocopy::transmute!(*self)
            }

            /// Writes the bytes into `out`.
            pub fn encode(&self, out: &mut [u8; $size]) {
                out.copy_from_slice(::zerocopy::IntoBytes::as_bytes(self));
            }

            /// The structure held by `src`.
            pub fn decode(src: &[u8; $size]) -> Self {
                ::zerocopy::transmute!(*src)
            }

            /// The structure at the start of `src`, `None` if `src` is shorter than `SIZE`.
            pub fn decode_slice(src: &[u8]) -> Option<Self> {
                <Self as ::zerocopy::FromBytes>::read_from_prefix(src)
                    .ok()
                    .map(|(v, _)| v)
            }
        }

        impl Default for $t {
            fn default() -> Self {
                <Self as ::zerocopy::FromZeros>::new_zeroed()
            }
        }
    )*};
}
pub(crate) use wire_layout;

/// A fixed-size little-endian wire value.
pub trait WireField: Sized {
    /// Encoded size in bytes.
    const SIZE: usize;
    /// Writes the value into `out[..SIZE]`. `out` must hold at least `SIZE` bytes (the
    /// `wire_struct!` layouts guarantee this at compile time).
    fn put(&self, out: &mut [u8]);
    /// Reads the value from `src[..SIZE]` (same guarantee as `put`).
    fn get(src: &[u8]) -> Self;
    /// The all-zero value.
    fn zero() -> Self;
}

macro_rules! impl_wire_int {
    ($($t:ty),*) => {$(
        impl WireField for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline]
            fn put(&self, out: &mut [u8]) {
                out[..Self::SIZE].copy_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn get(src: &[u8]) -> Self {
                let mut b = [0u8; std::mem::size_of::<$t>()];
                b.copy_from_slice(&src[..Self::SIZE]);
                <$t>::from_le_bytes(b)
            }
            #[inline]
            fn zero() -> Self {
                0
            }
        }
    )*};
}
impl_wire_int!(u8, u16, u32, u64, u128);

impl<T: WireField, const N: usize> WireField for [T; N] {
    const SIZE: usize = T::SIZE * N;
    fn put(&self, out: &mut [u8]) {
        for (i, v) in self.iter().enumerate() {
            v.put(&mut out[i * T::SIZE..]);
        }
    }
    fn get(src: &[u8]) -> Self {
        std::array::from_fn(|i| T::get(&src[i * T::SIZE..]))
    }
    fn zero() -> Self {
        std::array::from_fn(|_| T::zero())
    }
}

/// Reads a little-endian u16 at `off` (caller guarantees the bounds; used on fixed arrays).
#[inline]
pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
#[inline]
pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
#[inline]
pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Copies `s` into a fixed, space-padded ASCII field (serial, model, firmware revision), as
/// Identify Controller requires; longer strings are truncated.
pub fn ascii_field<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let n = s.len().min(N);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

/// Copies `s` into a fixed, NUL-padded field (NQNs, transport addresses, service ids);
/// longer strings are truncated so that at least one NUL remains.
pub fn nul_field<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = s.len().min(N.saturating_sub(1));
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

/// The text of a NUL-padded (or space-padded) field, up to the first NUL and without
/// trailing spaces. Invalid UTF-8 yields `None` (a peer may send anything).
pub fn field_str(b: &[u8]) -> Option<&str> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    std::str::from_utf8(&b[..end])
        .ok()
        .map(|s| s.trim_end_matches(' '))
}

/// Declares a wire struct: named public fields at explicit byte offsets within a block of
/// `size` bytes; unnamed gaps are reserved and encode as zero. Generates `SIZE`,
/// `encode(&self, &mut [u8; SIZE])`, `to_bytes()`, `decode(&[u8; SIZE])`, `Default`, and a
/// compile-time check that offsets increase, fields do not overlap and all fit in `size`.
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident [$size:expr] {
            $( $(#[$fmeta:meta])* $off:literal => $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        const _: () = {
            let mut end: usize = 0;
            $(
                assert!($off >= end, concat!("overlapping wire field ", stringify!($name), ".", stringify!($field)));
                end = $off + <$ty as $crate::nvmf::wire::WireField>::SIZE;
            )*
            assert!(end <= $size, concat!("wire struct ", stringify!($name), " exceeds its size"));
        };

        impl $name {
            /// Encoded size in bytes.
            pub const SIZE: usize = $size;

            /// Writes every field at its offset; reserved bytes are set to zero.
            pub fn encode(&self, out: &mut [u8; $size]) {
                out.fill(0);
                $( $crate::nvmf::wire::WireField::put(&self.$field, &mut out[$off..]); )*
            }

            /// The encoded bytes.
            pub fn to_bytes(&self) -> [u8; $size] {
                let mut out = [0u8; $size];
                self.encode(&mut out);
                out
            }

            /// Reads every field from its offset (reserved bytes are ignored).
            pub fn decode(src: &[u8; $size]) -> Self {
                Self { $( $field: $crate::nvmf::wire::WireField::get(&src[$off..]), )* }
            }

            /// Reads from the start of a slice, `None` if it is shorter than `SIZE`.
            pub fn decode_slice(src: &[u8]) -> Option<Self> {
                let arr: &[u8; $size] = src.get(..$size)?.try_into().ok()?;
                Some(Self::decode(arr))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $crate::nvmf::wire::WireField::zero(), )* }
            }
        }

        impl $crate::nvmf::wire::WireField for $name {
            const SIZE: usize = $size;
            fn put(&self, out: &mut [u8]) {
                $( $crate::nvmf::wire::WireField::put(&self.$field, &mut out[$off..]); )*
                // Reserved bytes of a nested struct are left as the caller zeroed them.
            }
            fn get(src: &[u8]) -> Self {
                Self { $( $field: $crate::nvmf::wire::WireField::get(&src[$off..]), )* }
            }
            fn zero() -> Self {
                Self::default()
            }
        }
    };
}
pub(crate) use wire_struct;
