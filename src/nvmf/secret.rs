//! The DH-HMAC-CHAP secret representation (`DHHC-1:XX:<base64>:`), its CRC check, and the key transformation of in-band authentication.
//!
//! NVMe base specification, DH-HMAC-CHAP: a secret is written `DHHC-1:`, two decimal digits
//! naming the hash that transforms it (00 none, 01 SHA-256, 02 SHA-384, 03 SHA-512), a
//! colon, the base64 of the 32, 48 or 64 secret bytes followed by their CRC-32 (IEEE, as
//! zlib computes it) in little-endian order, and a closing colon. Before use a secret with a
//! hash is transformed: `HMAC(hash, secret, NQN || "NVMe-over-Fabrics")` (the NQN of the
//! side the secret belongs to). The hashes themselves (`Hash`) are the ones of the
//! DH-HMAC-CHAP protocol (HashID 1-3).

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384, Sha512};

/// A hash function of DH-HMAC-CHAP (HashID 1 SHA-256, 2 SHA-384, 3 SHA-512).
#[derive(Debug, Clone, Copy, PartialEq, Eq, num_enum::TryFromPrimitive)]
#[repr(u8)]
pub enum Hash {
    Sha256 = 1,
    Sha384 = 2,
    Sha512 = 3,
}

impl Hash {
    pub fn from_id(id: u8) -> Option<Self> {
        Self::try_from(id).ok()
    }

    /// The digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Self::Sha256 => Sha256::digest(data).to_vec(),
            Self::Sha384 => Sha384::digest(data).to_vec(),
            Self::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// SPDK's and the Linux host's name of the hash.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// HMAC with `key` over the concatenation of `parts`.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC takes a key of any length");
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
        match self {
            Self::Sha256 => run::<Hmac<Sha256>>(key, parts),
            Self::Sha384 => run::<Hmac<Sha384>>(key, parts),
            Self::Sha512 => run::<Hmac<Sha512>>(key, parts),
        }
    }
}

/// Why a secret representation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("not a DH-HMAC-CHAP secret: it must read DHHC-1:<hash>:<base64>:")]
    Format,
    #[error("unknown secret hash {0:?} (00 none, 01 SHA-256, 02 SHA-384, 03 SHA-512)")]
    Hash(String),
    #[error("the secret is not base64: {0}")]
    Base64(String),
    #[error("the secret holds {0} bytes with its CRC; it must hold 32, 48 or 64 and 4")]
    Length(usize),
    #[error("the secret's CRC-32 does not match (written {written:08x}, computed {computed:08x})")]
    Crc { written: u32, computed: u32 },
}

/// Why an interchange representation was refused; each key format turns it into its own
/// error, with its own wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InterchangeError {
    Format,
    Hash(String),
    Base64(String),
    Length(usize),
    Crc { written: u32, computed: u32 },
}

/// A key interchange representation shared by DH-HMAC-CHAP secrets and TLS PSKs:
/// `<prefix>:<hash, two decimal digits>:<base64 of the key and its CRC-32 (IEEE,
/// little-endian)>:`.
pub(crate) struct Interchange {
    /// The text before the hash, with its colon (`DHHC-1:`, `NVMeTLSkey-1:`).
    pub prefix: &'static str,
    /// The closing colon may be left out.
    pub closing_colon_optional: bool,
    /// The hashes the two digits may name beside 00 (no hash).
    pub hashes: &'static [Hash],
    /// The key lengths allowed, without the CRC.
    pub key_lens: &'static [usize],
}

impl Interchange {
    /// The hash (`None` for 00) and the key of `text`, its length and CRC checked.
    pub fn parse(&self, text: &str) -> Result<(Option<Hash>, Vec<u8>), InterchangeError> {
        use InterchangeError as E;
        let rest = text.trim().strip_prefix(self.prefix).ok_or(E::Format)?;
        let (hash, rest) = rest.split_once(':').ok_or(E::Format)?;
        let encoded = match rest.strip_suffix(':') {
            Some(encoded) => encoded,
            None if self.closing_colon_optional => rest,
            None => return Err(E::Format),
        };
        if encoded.is_empty() || encoded.contains(':') {
            return Err(E::Format);
        }
        let hash = match hash {
            "00" => None,
            _ => Some(
                *self
                    .hashes
                    .iter()
                    .find(|h| hash == format!("{:02}", **h as u8))
                    .ok_or_else(|| E::Hash(hash.to_string()))?,
            ),
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| E::Base64(e.to_string()))?;
        if !self.key_lens.iter().any(|&n| n + 4 == raw.len()) {
            return Err(E::Length(raw.len()));
        }
        let (key, crc) = raw.split_at(raw.len() - 4);
        let written = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        let computed = crc32fast::hash(key);
        if written != computed {
            return Err(E::Crc { written, computed });
        }
        Ok((hash, key.to_vec()))
    }

    /// The representation [`Interchange::parse`] reads.
    pub fn format(&self, hash: Option<Hash>, key: &[u8]) -> String {
        let mut raw = key.to_vec();
        raw.extend_from_slice(&crc32fast::hash(key).to_le_bytes());
        format!(
            "{}{:02}:{}:",
            self.prefix,
            hash.map_or(0, |h| h as u8),
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// `DHHC-1:` secrets: any of the three hashes, 32, 48 or 64 bytes; nvme-cli accepts them
/// without the closing colon.
const DHHC_1: Interchange = Interchange {
    prefix: "DHHC-1:",
    closing_colon_optional: true,
    hashes: &[Hash::Sha256, Hash::Sha384, Hash::Sha512],
    key_lens: &[32, 48, 64],
};

/// Gives a key format's error type `From<InterchangeError>`: each variant of the shared
/// parser maps to the format's variant of the same name.
macro_rules! from_interchange_error {
    ($E:ty) => {
        impl From<$crate::nvmf::secret::InterchangeError> for $E {
            fn from(e: $crate::nvmf::secret::InterchangeError) -> Self {
                use $crate::nvmf::secret::InterchangeError as I;
                match e {
                    I::Format => Self::Format,
                    I::Hash(h) => Self::Hash(h),
                    I::Base64(b) => Self::Base64(b),
                    I::Length(n) => Self::Length(n),
                    I::Crc { written, computed } => Self::Crc { written, computed },
                }
            }
        }
    };
}
pub(crate) use from_interchange_error;

from_interchange_error!(SecretError);

/// A parsed DH-HMAC-CHAP secret: its bytes and the hash that transforms it (none for 00).
#[derive(Clone, PartialEq, Eq)]
pub struct DhchapSecret {
    pub transform: Option<Hash>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for DhchapSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhchapSecret")
            .field("transform", &self.transform)
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .finish()
    }
}

impl DhchapSecret {
    /// Parses the `DHHC-1:XX:<base64>:` representation, checking the length and the CRC.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let (transform, key) = DHHC_1.parse(text)?;
        Ok(Self { transform, key })
    }

    /// The representation `parse` reads.
    pub fn format(&self) -> String {
        DHHC_1.format(self.transform, &self.key)
    }

    /// The key used in the protocol: the secret transformed with `nqn` (the NQN of the side
    /// it belongs to), or the secret itself when it names no hash.
    pub fn transformed(&self, nqn: &str) -> Vec<u8> {
        match self.transform {
            None => self.key.clone(),
            Some(h) => h.hmac(&self.key, &[nqn.as_bytes(), b"NVMe-over-Fabrics"]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_00_1F: [u8; 32] = {
        let mut k = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            k[i] = i as u8;
            i += 1;
        }
        k
    };

    /// `nvme gen-dhchap-key -s 000102..1f -m 0 -l 32` (nvme-cli 2.3) printed this secret.
    #[test]
    fn reads_and_writes_what_nvme_cli_writes() {
        let text = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
        let s = DhchapSecret::parse(text).unwrap();
        assert_eq!(s.transform, None);
        assert_eq!(s.key, KEY_00_1F);
        assert_eq!(s.format(), text);
        assert_eq!(s.transformed("any"), KEY_00_1F);
    }

    /// `nvme gen-dhchap-key -s 000102..1f -m 1 -l 32 -n nqn.2014-08.org.nvmexpress:uuid:test`
    /// (nvme-cli 2.3) prints the secret already transformed with SHA-256 and that NQN.
    #[test]
    fn transformation_matches_nvme_cli() {
        let printed =
            DhchapSecret::parse("DHHC-1:01:WulleCBkG4oCs0iIC3Cit9gBDCLWiZ9PNXuhqytWkBIZkvGy:")
                .unwrap();
        let secret = DhchapSecret {
            transform: Some(Hash::Sha256),
            key: KEY_00_1F.to_vec(),
        };
        assert_eq!(
            secret.transformed("nqn.2014-08.org.nvmexpress:uuid:test"),
            printed.key
        );
        let sha512 = DhchapSecret {
            transform: Some(Hash::Sha512),
            key: vec![7; 64],
        };
        assert_eq!(sha512.transformed("nqn.x").len(), Hash::Sha512.digest_len());
    }

    #[test]
    fn refusals_name_their_reason() {
        let good = DhchapSecret {
            transform: Some(Hash::Sha384),
            key: vec![9; 48],
        }
        .format();
        assert!(good.starts_with("DHHC-1:02:"));
        assert_eq!(DhchapSecret::parse(&good).unwrap().key, vec![9; 48]);
        // One character of the key changed: the CRC no longer matches.
        let mut bad: Vec<char> = good.chars().collect();
        bad[12] = if bad[12] == 'A' { 'B' } else { 'A' };
        let bad: String = bad.into_iter().collect();
        assert!(matches!(
            DhchapSecret::parse(&bad),
            Err(SecretError::Crc { .. })
        ));
        assert_eq!(
            DhchapSecret::parse("DHHC-2:00:AAAA:"),
            Err(SecretError::Format)
        );
        assert_eq!(
            DhchapSecret::parse("DHHC-1:04:AAAA:"),
            Err(SecretError::Hash("04".into()))
        );
        assert!(matches!(
            DhchapSecret::parse("DHHC-1:00:!!!!:"),
            Err(SecretError::Base64(_))
        ));
        assert_eq!(
            DhchapSecret::parse("DHHC-1:00:AAAAAAAA:"),
            Err(SecretError::Length(6))
        );
        assert_eq!(DhchapSecret::parse("DHHC-1:00::"), Err(SecretError::Format));
        assert!(!format!("{:?}", DhchapSecret::parse(&good).unwrap()).contains('9'));
    }
}
