//! NVMe/TCP header and data digests (CRC32C).
//!
//! NVMe/TCP header and data digests: CRC32C (Castagnoli, hardware accelerated by the
//! `crc32c` crate) stored little-endian after the covered bytes. The header digest covers
//! the common and PDU specific header (HLEN bytes); the data digest covers the PDU data only
//! (not the padding before it). Data may be scattered over several buffers: `DataDigest`
//! accumulates a CRC over any number of slices without copying them.

/// Length of a header or data digest on the wire.
pub const DIGEST_LEN: usize = 4;

/// A running CRC32C over data given in pieces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataDigest {
    crc: u32,
}

impl DataDigest {
    pub const fn new() -> Self {
        Self { crc: 0 }
    }
    /// Adds the next piece of the covered bytes.
    #[inline]
    pub fn update(&mut self, bytes: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
    }
    /// The CRC32C of everything added so far.
    pub const fn value(&self) -> u32 {
        self.crc
    }
    /// The digest as it appears on the wire.
    pub const fn to_wire(&self) -> [u8; DIGEST_LEN] {
        self.crc.to_le_bytes()
    }
    /// Whether `wire` (the 4 digest bytes received) matches.
    pub fn matches(&self, wire: &[u8; DIGEST_LEN]) -> bool {
        u32::from_le_bytes(*wire) == self.crc
    }
}

/// CRC32C over several slices, as if they were one contiguous buffer.
pub fn crc32c_of(slices: &[&[u8]]) -> u32 {
    let mut d = DataDigest::new();
    for s in slices {
        d.update(s);
    }
    d.value()
}

/// The wire form of the digest over `slices` (data digest of scattered data).
pub fn digest_of(slices: &[&[u8]]) -> [u8; DIGEST_LEN] {
    crc32c_of(slices).to_le_bytes()
}

/// The wire form of the header digest over a PDU header (`hdr` = its HLEN bytes).
pub fn header_digest(hdr: &[u8]) -> [u8; DIGEST_LEN] {
    crc32c::crc32c(hdr).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_split_equivalence() {
        // The CRC-32C check value from the Castagnoli / iSCSI reference.
        assert_eq!(crc32c_of(&[b"123456789"]), 0xe306_9283);
        assert_eq!(header_digest(b"123456789"), 0xe306_9283u32.to_le_bytes());
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 3) as u8).collect();
        let whole = crc32c_of(&[&data]);
        for split in [0, 1, 3, 4096, 9_999, 10_000] {
            let (a, b) = data.split_at(split);
            assert_eq!(crc32c_of(&[a, b]), whole, "split at {split}");
            let mut d = DataDigest::new();
            d.update(a);
            d.update(&[]);
            d.update(b);
            assert!(d.matches(&whole.to_le_bytes()));
            assert!(!d.matches(&(whole ^ 1).to_le_bytes()));
        }
        assert_eq!(crc32c_of(&[]), 0);
    }
}
