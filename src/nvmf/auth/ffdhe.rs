//! The finite-field Diffie-Hellman groups of DH-HMAC-CHAP: RFC 7919's ffdhe2048 to ffdhe8192 (generator 2), as group ids 1-5.
//!
//! The primes are the RFC's published constants (read off OpenSSL's built-in groups). A
//! private exponent is random, twice as long as the group's security strength (NIST SP
//! 800-56A's bound for these safe-prime groups; OpenSSL and the Linux kernel size theirs
//! the same way), which makes each exponentiation 10-20 times cheaper than a full-length
//! exponent; public values and shared secrets are big-endian numbers as long as the prime. Arithmetic is crypto-bigint's constant-time
//! Montgomery exponentiation.

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd};

/// The primes of ffdhe2048, 3072, 4096, 6144 and 8192, hex.
const FFDHE2048: &str = concat!(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FBCC939DCE249B3EF9",
    "7D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FB",
    "B96ADAB760D7F4681D4F42A3DE394DF4AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA",
    "886B423861285C97FFFFFFFFFFFFFFFF",
);
const FFDHE3072: &str = concat!(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FBCC939DCE249B3EF9",
    "7D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FB",
    "B96ADAB760D7F4681D4F42A3DE394DF4AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA",
    "886B4238611FCFDCDE355B3B6519035BBC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C",
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF5CAE82AB9C9DF69EE86D2BC522363A0D",
    "ABC521979B0DEADA1DBF9A42D5C4484E0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B66C62E37FFFFFFFFFFFFFFFF",
);
const FFDHE4096: &str = concat!(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FBCC939DCE249B3EF9",
    "7D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FB",
    "B96ADAB760D7F4681D4F42A3DE394DF4AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA",
    "886B4238611FCFDCDE355B3B6519035BBC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C",
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF5CAE82AB9C9DF69EE86D2BC522363A0D",
    "ABC521979B0DEADA1DBF9A42D5C4484E0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B669E1EF16E6F52C3164DF4FB",
    "7930E9E4E58857B6AC7D5F42D69F6D187763CF1D5503400487F55BA57E31CC7A7135C886EFB4318AED6A1E012D9E6832",
    "A907600A918130C46DC778F971AD0038092999A333CB8B7A1A1DB93D7140003C2A4ECEA9F98D0ACC0A8291CDCEC97DCF",
    "8EC9B55A7F88A46B4DB5A851F44182E1C68A007E5E655F6AFFFFFFFFFFFFFFFF",
);
const FFDHE6144: &str = concat!(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FBCC939DCE249B3EF9",
    "7D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FB",
    "B96ADAB760D7F4681D4F42A3DE394DF4AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA",
    "886B4238611FCFDCDE355B3B6519035BBC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C",
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF5CAE82AB9C9DF69EE86D2BC522363A0D",
    "ABC521979B0DEADA1DBF9A42D5C4484E0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B669E1EF16E6F52C3164DF4FB",
    "7930E9E4E58857B6AC7D5F42D69F6D187763CF1D5503400487F55BA57E31CC7A7135C886EFB4318AED6A1E012D9E6832",
    "A907600A918130C46DC778F971AD0038092999A333CB8B7A1A1DB93D7140003C2A4ECEA9F98D0ACC0A8291CDCEC97DCF",
    "8EC9B55A7F88A46B4DB5A851F44182E1C68A007E5E0DD9020BFD64B645036C7A4E677D2C38532A3A23BA4442CAF53EA6",
    "3BB454329B7624C8917BDD64B1C0FD4CB38E8C334C701C3ACDAD0657FCCFEC719B1F5C3E4E46041F388147FB4CFDB477",
    "A52471F7A9A96910B855322EDB6340D8A00EF092350511E30ABEC1FFF9E3A26E7FB29F8C183023C3587E38DA0077D9B4",
    "763E4E4B94B2BBC194C6651E77CAF992EEAAC0232A281BF6B3A739C1226116820AE8DB5847A67CBEF9C9091B462D538C",
    "D72B03746AE77F5E62292C311562A846505DC82DB854338AE49F5235C95B91178CCF2DD5CACEF403EC9D1810C6272B04",
    "5B3B71F9DC6B80D63FDD4A8E9ADB1E6962A69526D43161C1A41D570D7938DAD4A40E329CD0E40E65FFFFFFFFFFFFFFFF",
);
const FFDHE8192: &str = concat!(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FBCC939DCE249B3EF9",
    "7D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FB",
    "B96ADAB760D7F4681D4F42A3DE394DF4AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA",
    "886B4238611FCFDCDE355B3B6519035BBC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C",
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF5CAE82AB9C9DF69EE86D2BC522363A0D",
    "ABC521979B0DEADA1DBF9A42D5C4484E0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B669E1EF16E6F52C3164DF4FB",
    "7930E9E4E58857B6AC7D5F42D69F6D187763CF1D5503400487F55BA57E31CC7A7135C886EFB4318AED6A1E012D9E6832",
    "A907600A918130C46DC778F971AD0038092999A333CB8B7A1A1DB93D7140003C2A4ECEA9F98D0ACC0A8291CDCEC97DCF",
    "8EC9B55A7F88A46B4DB5A851F44182E1C68A007E5E0DD9020BFD64B645036C7A4E677D2C38532A3A23BA4442CAF53EA6",
    "3BB454329B7624C8917BDD64B1C0FD4CB38E8C334C701C3ACDAD0657FCCFEC719B1F5C3E4E46041F388147FB4CFDB477",
    "A52471F7A9A96910B855322EDB6340D8A00EF092350511E30ABEC1FFF9E3A26E7FB29F8C183023C3587E38DA0077D9B4",
    "763E4E4B94B2BBC194C6651E77CAF992EEAAC0232A281BF6B3A739C1226116820AE8DB5847A67CBEF9C9091B462D538C",
    "D72B03746AE77F5E62292C311562A846505DC82DB854338AE49F5235C95B91178CCF2DD5CACEF403EC9D1810C6272B04",
    "5B3B71F9DC6B80D63FDD4A8E9ADB1E6962A69526D43161C1A41D570D7938DAD4A40E329CCFF46AAA36AD004CF600C838",
    "1E425A31D951AE64FDB23FCEC9509D43687FEB69EDD1CC5E0B8CC3BDF64B10EF86B63142A3AB8829555B2F747C932665",
    "CB2C0F1CC01BD70229388839D2AF05E454504AC78B7582822846C0BA35C35F5C59160CC046FD8251541FC68C9C86B022",
    "BB7099876A460E7451A8A93109703FEE1C217E6C3826E52C51AA691E0E423CFC99E9E31650C1217B624816CDAD9A95F9",
    "D5B8019488D9C0A0A1FE3075A577E23183F81D4A3F2FA4571EFC8CE0BA8A4FE8B6855DFE72B0A66EDED2FBABFBE58A30",
    "FAFABE1C5D71A87E2F741EF8C1FE86FEA6BBFDE530677F0D97D11D49F7A8443D0822E506A9F4614E011E2A94838FF88C",
    "D68C8BB7C5C6424CFFFFFFFFFFFFFFFF",
);

/// A DH group of DH-HMAC-CHAP (DHGID 1-5; 0, the NULL group, is no exchange at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, num_enum::TryFromPrimitive)]
#[repr(u8)]
pub enum DhGroup {
    Ffdhe2048 = 1,
    Ffdhe3072 = 2,
    Ffdhe4096 = 3,
    Ffdhe6144 = 4,
    Ffdhe8192 = 5,
}

impl DhGroup {
    pub fn from_id(id: u8) -> Option<Self> {
        Self::try_from(id).ok()
    }

    /// SPDK's and the Linux host's name of the group.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ffdhe2048 => "ffdhe2048",
            Self::Ffdhe3072 => "ffdhe3072",
            Self::Ffdhe4096 => "ffdhe4096",
            Self::Ffdhe6144 => "ffdhe6144",
            Self::Ffdhe8192 => "ffdhe8192",
        }
    }

    /// Bytes of the prime (and of every public value and shared secret).
    pub fn size(self) -> usize {
        self.prime_hex().len() / 2
    }

    fn prime_hex(self) -> &'static str {
        match self {
            Self::Ffdhe2048 => FFDHE2048,
            Self::Ffdhe3072 => FFDHE3072,
            Self::Ffdhe4096 => FFDHE4096,
            Self::Ffdhe6144 => FFDHE6144,
            Self::Ffdhe8192 => FFDHE8192,
        }
    }

    fn bits(self) -> u32 {
        (self.size() * 8) as u32
    }

    /// Security strength in bits (NIST SP 800-56A / RFC 7919).
    fn strength(self) -> u32 {
        match self {
            Self::Ffdhe2048 => 112,
            Self::Ffdhe3072 => 128,
            Self::Ffdhe4096 => 152,
            Self::Ffdhe6144 => 176,
            Self::Ffdhe8192 => 200,
        }
    }

    fn prime(self) -> BoxedUint {
        let bytes: Vec<u8> = (0..self.size())
            .map(|i| {
                u8::from_str_radix(&self.prime_hex()[2 * i..2 * i + 2], 16).expect("hex prime")
            })
            .collect();
        BoxedUint::from_be_slice(&bytes, self.bits()).expect("prime fits its size")
    }

    fn params(self) -> BoxedMontyParams {
        let odd = Odd::new(self.prime())
            .into_option()
            .expect("the prime is odd");
        BoxedMontyParams::new(odd)
    }

    fn to_bytes(self, n: &BoxedUint) -> Vec<u8> {
        let be = n.to_be_bytes();
        let mut out = vec![0u8; self.size()];
        let len = be.len().min(out.len());
        let at = out.len() - len;
        out[at..].copy_from_slice(&be[be.len() - len..]);
        out
    }

    /// `base ^ exponent mod p`, both big-endian of the group's size.
    fn pow(self, base: &BoxedUint, exponent: &BoxedUint) -> Vec<u8> {
        let params = self.params();
        let x = BoxedMontyForm::new(base.clone(), &params);
        self.to_bytes(&x.pow(exponent).retrieve())
    }

    /// A new key pair: a random private exponent and its public value `2^x mod p`.
    pub fn key_pair(self) -> Result<DhKeyPair, String> {
        // 2s random bits with the top one set: in [2^(2s-1), 2^(2s)), far below p - 1.
        let exp_bits = 2 * self.strength();
        let mut secret = vec![0u8; exp_bits.div_ceil(8) as usize];
        getrandom::fill(&mut secret).map_err(|e| format!("no random numbers: {e}"))?;
        secret[0] |= 0x80;
        let private = BoxedUint::from_be_slice(&secret, exp_bits).expect("sized");
        let two = BoxedUint::from_be_slice(&[2], self.bits()).expect("sized");
        let public = self.pow(&two, &private);
        Ok(DhKeyPair {
            group: self,
            private,
            public,
        })
    }
}

/// One side's Diffie-Hellman key pair in a group.
pub struct DhKeyPair {
    group: DhGroup,
    private: BoxedUint,
    /// The public value to send, big-endian, as long as the prime.
    pub public: Vec<u8>,
}

impl DhKeyPair {
    /// The shared secret with the peer's public value, which must be as long as the prime
    /// and lie strictly between 1 and p - 1 (anything else would pin the secret).
    pub fn shared_secret(&self, peer_public: &[u8]) -> Result<Vec<u8>, String> {
        let g = self.group;
        if peer_public.len() != g.size() {
            return Err(format!(
                "the DH value holds {} bytes; {} takes {}",
                peer_public.len(),
                g.name(),
                g.size()
            ));
        }
        let y = BoxedUint::from_be_slice(peer_public, g.bits()).expect("sized");
        let one = BoxedUint::from_be_slice(&[1], g.bits()).expect("sized");
        let p_minus_1 = g.prime().wrapping_sub(&one);
        if y <= one || y >= p_minus_1 {
            return Err(format!("the DH value is out of range for {}", g.name()));
        }
        Ok(g.pow(&y, &self.private))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_reach_the_same_secret_and_bad_values_are_refused() {
        for g in [DhGroup::Ffdhe2048, DhGroup::Ffdhe3072] {
            let (a, b) = (g.key_pair().unwrap(), g.key_pair().unwrap());
            assert_eq!(a.public.len(), g.size());
            let s = a.shared_secret(&b.public).unwrap();
            assert_eq!(s, b.shared_secret(&a.public).unwrap());
            assert_eq!(s.len(), g.size());
            assert_ne!(a.public, b.public);
            let mut one = vec![0u8; g.size()];
            one[g.size() - 1] = 1;
            assert!(a.shared_secret(&one).is_err(), "1 pins the secret");
            assert!(a.shared_secret(&vec![0xff; g.size()]).is_err(), "above p");
            assert!(a.shared_secret(&b.public[1..]).is_err(), "short");
        }
        assert_eq!(DhGroup::Ffdhe8192.size(), 1024);
        assert_eq!(DhGroup::from_id(6), None);
    }

    /// A short private exponent gives the same power as the same number at the prime's
    /// precision, and key pairs are fresh and full-length.
    #[test]
    fn short_exponents_compute_the_same_power() {
        for g in [DhGroup::Ffdhe2048, DhGroup::Ffdhe8192] {
            let pair = g.key_pair().unwrap();
            let full = BoxedUint::from_be_slice(&pair.private.to_be_bytes(), g.bits()).unwrap();
            let two = BoxedUint::from_be_slice(&[2], g.bits()).unwrap();
            assert_eq!(g.pow(&two, &full), pair.public, "{}", g.name());
            assert_eq!(pair.private.bit_width(), 2 * g.strength(), "{}", g.name());
            assert_ne!(pair.public, g.key_pair().unwrap().public);
        }
        // 2^10 in any group is 1024.
        let g = DhGroup::Ffdhe2048;
        let ten = BoxedUint::from_be_slice(&[10], 64).unwrap();
        let two = BoxedUint::from_be_slice(&[2], g.bits()).unwrap();
        let mut want = vec![0u8; g.size()];
        want[g.size() - 2] = 4;
        assert_eq!(g.pow(&two, &ten), want);
    }

    /// Every group of the five: its prime has the size its name says, and two key pairs
    /// agree (the Linux host was checked with 2048, 3072 and 4096 only).
    #[test]
    fn every_group_agrees_at_its_size() {
        for (id, bits) in [(1, 2048), (2, 3072), (3, 4096), (4, 6144), (5, 8192)] {
            let g = DhGroup::from_id(id).unwrap();
            assert_eq!(g.size() * 8, bits, "{}", g.name());
            assert_eq!(g.name(), format!("ffdhe{bits}"));
            let (a, b) = (g.key_pair().unwrap(), g.key_pair().unwrap());
            assert_eq!(
                a.shared_secret(&b.public).unwrap(),
                b.shared_secret(&a.public).unwrap(),
                "{}",
                g.name()
            );
        }
    }
}
