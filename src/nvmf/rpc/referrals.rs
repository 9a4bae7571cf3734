//! Discovery referral methods: add, remove and list the referrals the discovery log carries.

use super::{failed, mutate, parse_or_empty, ListenAddress};
use crate::nvmf::referral::Referral;
use crate::nvmf::subsystem;
use crate::nvmf::target::with_target;
use crate::rpc::{Responder, RpcResult};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferralParams {
    address: ListenAddress,
    subnqn: Option<String>,
    secure_channel: Option<bool>,
    tgt_name: Option<String>,
}

impl ReferralParams {
    /// The referral's address and NQN (the discovery NQN by default), checked.
    fn parse(self) -> Result<(Referral, Option<String>), String> {
        if !self.address.trtype.eq_ignore_ascii_case("tcp") {
            return Err(format!(
                "address.trtype: {} is not supported (only TCP)",
                self.address.trtype
            ));
        }
        if self.address.trsvcid.as_deref().is_none_or(str::is_empty) {
            return Err("address.trsvcid: the service id (port) is required for TCP".into());
        }
        let subnqn = self
            .subnqn
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| crate::nvmf::wire::DISCOVERY_NQN.to_string());
        subsystem::valid_nqn(&subnqn).map_err(|e| format!("sub{e}"))?;
        let mut addr = self.address.into_addr();
        addr.trtype = "TCP".into();
        let r = Referral {
            addr,
            subnqn,
            secure_channel: self.secure_channel.unwrap_or(false),
        };
        Ok((r, self.tgt_name))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TgtOnly {
    tgt_name: Option<String>,
}

pub(super) fn nvmf_discovery_add_referral(params: Option<Value>, responder: Responder) {
    let p: ReferralParams = params!(params, responder);
    match p.parse() {
        Ok((referral, _)) => mutate(responder, |t| {
            t.add_referral(referral);
            Ok(())
        }),
        Err(e) => responder.err(failed(e)),
    }
}

pub(super) fn nvmf_discovery_remove_referral(params: Option<Value>, responder: Responder) {
    let p: ReferralParams = params!(params, responder);
    if p.secure_channel.is_some() {
        return responder.err(failed(
            "secure_channel: not a parameter of nvmf_discovery_remove_referral".into(),
        ));
    }
    match p.parse() {
        Ok((referral, _)) => mutate(responder, |t| {
            t.remove_referral(&referral.addr, &referral.subnqn)
        }),
        Err(e) => responder.err(failed(e)),
    }
}

pub(super) fn nvmf_discovery_get_referrals(params: Option<Value>) -> RpcResult {
    let p: TgtOnly = parse_or_empty(params)?;
    let _ = p.tgt_name;
    Ok(with_target(|t| {
        json!(t
            .referrals()
            .iter()
            .map(Referral::to_json)
            .collect::<Vec<_>>())
    }))
}
