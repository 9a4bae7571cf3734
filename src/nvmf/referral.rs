//! Discovery referrals: other discovery services or subsystem ports listed in the discovery log.
//!
//! `nvmf_discovery_add_referral` records a transport address and a subsystem NQN (by default
//! the discovery NQN: a referral to another discovery service, e.g. the other gateway of a
//! pair) in the target; every discovery log page lists the referrals after the target's own
//! entries, as SPDK does (port id 0, controller id 0xFFFF, subtype discovery or NVMe by the
//! NQN, TREQ from `secure_channel`). Referrals are target-wide, survive a deletion of the
//! discovery subsystem, and are saved in configs.

use super::subsystem::ListenAddr;
use super::wire::{self, DiscoveryLogEntry, DISCOVERY_NQN};
use serde_json::{json, Value};

/// One referral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referral {
    pub addr: ListenAddr,
    pub subnqn: String,
    pub secure_channel: bool,
}

impl Referral {
    /// The same referral (SPDK compares the transport id: address and NQN).
    pub fn same(&self, addr: &ListenAddr, subnqn: &str) -> bool {
        self.addr.same_endpoint(addr)
            && self.addr.adrfam.eq_ignore_ascii_case(&addr.adrfam)
            && self.subnqn == subnqn
    }

    /// Its discovery log entry.
    pub fn entry(&self) -> DiscoveryLogEntry {
        let subtype = if self.subnqn == DISCOVERY_NQN {
            wire::subtype::DISCOVERY_REFERRAL
        } else {
            wire::subtype::NVME
        };
        let mut e = DiscoveryLogEntry {
            trtype: wire::trtype::TCP,
            adrfam: if self.addr.adrfam.eq_ignore_ascii_case("ipv6") {
                wire::adrfam::IPV6
            } else {
                wire::adrfam::IPV4
            },
            subtype,
            treq: if self.secure_channel {
                wire::treq::SECURE_CHANNEL_REQUIRED
            } else {
                wire::treq::SECURE_CHANNEL_NOT_REQUIRED
            },
            cntlid: wire::CNTLID_DYNAMIC.into(),
            ..Default::default()
        };
        e.trsvcid = super::nul_field(&self.addr.trsvcid);
        e.subnqn = super::nul_field(&self.subnqn);
        e.traddr = super::nul_field(&self.addr.traddr);
        e
    }

    /// `nvmf_discovery_get_referrals`' entry (SPDK's shape), also the saved params.
    pub fn to_json(&self) -> Value {
        json!({
            "address": self.addr.to_json(),
            "secure_channel": self.secure_channel,
            "subnqn": self.subnqn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_say_discovery_or_nvme_by_nqn() {
        let r = Referral {
            addr: ListenAddr::tcp("127.0.0.1", 4430),
            subnqn: DISCOVERY_NQN.into(),
            secure_channel: false,
        };
        let e = r.entry();
        assert_eq!(e.subtype, wire::subtype::DISCOVERY_REFERRAL);
        assert_eq!(e.portid, 0);
        assert_eq!(e.cntlid, wire::CNTLID_DYNAMIC);
        assert_eq!(crate::nvmf::field_str(&e.trsvcid), Some("4430"));
        let r = Referral {
            subnqn: "nqn.2016-06.io.pollux:x".into(),
            secure_channel: true,
            ..r
        };
        assert_eq!(r.entry().subtype, wire::subtype::NVME);
        assert_eq!(r.entry().treq, wire::treq::SECURE_CHANNEL_REQUIRED);
        assert!(r.same(
            &ListenAddr::tcp("127.0.0.1", 4430),
            "nqn.2016-06.io.pollux:x"
        ));
        assert!(!r.same(&ListenAddr::tcp("127.0.0.1", 4430), DISCOVERY_NQN));
    }
}
