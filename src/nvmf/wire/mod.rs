//! The NVMe and NVMe/TCP wire layer: every structure that crosses the network, and the codec.
//!
//! Pure code with no I/O: it imports nothing from the sockets, the bdevs or the target, so
//! the target, the host and the fuzzers all drive the same types. `nvme` holds the base
//! structures (opcodes, status codes, SGL descriptor, SQE, CQE, admin / I/O command fields),
//! `fabrics` the NVMe over Fabrics commands and controller properties, `identify` the
//! Identify data, `log` the log pages, `auth` the DH-HMAC-CHAP messages, `reservation`
//! the reservation command data, status and notification page, `tcp` the NVMe/TCP PDU header
//! layouts, `pdu` the PDU encoder and the incremental, limit-checking decoder, and `digest`
//! the CRC32C header and data digests. Field names follow the specification's abbreviations
//! so they can be looked up there.

pub mod auth;
pub mod digest;
pub mod fabrics;
pub mod identify;
pub mod log;
pub mod nvme;
pub mod pdu;
pub mod reservation;
pub mod tcp;
#[cfg(test)]
mod tests;

pub use fabrics::*;
pub use identify::*;
pub use log::*;
pub use nvme::*;
pub use reservation::*;

use zerocopy::little_endian::{U128, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Declares a `#[repr(u8)]` enum of wire code points whose `Debug` prints the name, with
/// `from_u8` / `TryFrom<u8>`, and a module of the same values as `u8` constants for
/// matching on raw fields: `Name / CONST = value`.
macro_rules! wire_enum {
    (
        $(#[$m:meta])*
        pub enum $E:ident in $M:ident {
            $( $(#[$vm:meta])* $V:ident / $C:ident = $v:literal, )*
        }
    ) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $E {
            $( $(#[$vm])* $V = $v, )*
        }

        impl $E {
            /// The code point named by `v`, `None` for a value not listed here.
            pub const fn from_u8(v: u8) -> Option<Self> {
                match v {
                    $( $v => Some(Self::$V), )*
                    _ => None,
                }
            }
        }

        impl TryFrom<u8> for $E {
            type Error = u8;
            fn try_from(v: u8) -> Result<Self, u8> {
                Self::from_u8(v).ok_or(v)
            }
        }

        $(#[$m])*
        pub mod $M {
            $( $(#[$vm])* pub const $C: u8 = super::$E::$V as u8; )*
        }
    };
}
pub(crate) use wire_enum;

/// Declares a one-byte (or wider) flag set that sits in a wire layout as it is
/// (`#[repr(transparent)]`, zerocopy) with `bitflags` operations and a `Debug` that prints
/// the flag names.
macro_rules! wire_flags {
    (
        $(#[$m:meta])*
        pub struct $F:ident: $T:ty {
            $( $(#[doc = $d:literal])* const $N:ident = $v:expr; )*
        }
    ) => {
        $(#[$m])*
        #[derive(
            Clone, Copy, PartialEq, Eq, Hash, Default,
            ::zerocopy::FromBytes, ::zerocopy::IntoBytes, ::zerocopy::KnownLayout,
            ::zerocopy::Immutable, ::zerocopy::Unaligned,
        )]
        #[repr(transparent)]
        pub struct $F($T);

        ::bitflags::bitflags! {
            impl $F: $T {
                $( $(#[doc = $d])* const $N = $v; )*
            }
        }

        impl ::core::fmt::Debug for $F {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::bitflags::parser::to_writer(self, &mut *f)
            }
        }
    };
}
pub(crate) use wire_flags;

/// Checks at compile time that the fields of a wire layout sit at the specification's byte
/// offsets: `assert_offsets!(Type; field offset, field offset, ...)`.
macro_rules! assert_offsets {
    ($T:ty; $($f:ident $off:literal),* $(,)?) => {
        const _: () = { $( assert!(::core::mem::offset_of!($T, $f) == $off); )* };
    };
}
pub(crate) use assert_offsets;

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
                let mut out = [0u8; $size];
                self.encode(&mut out);
                out
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
