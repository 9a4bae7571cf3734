//! JSON-RPC methods of the NVMe-oF target, with SPDK's names, parameters and result
//! shapes: `nvmf_create_transport` (accepting and ignoring the keys SPDK's rpc.py sends for
//! other transports), `nvmf_get_transports`, `nvmf_create_subsystem`,
//! `nvmf_delete_subsystem`, `nvmf_subsystem_add_listener` / `_remove_listener`,
//! `nvmf_subsystem_add_ns` / `_remove_ns`, `nvmf_subsystem_add_host` / `_remove_host` /
//! `_set_keys` (DH-HMAC-CHAP key names resolved in the keyring), `nvmf_set_config`
//! (`dhchap_digests`, `dhchap_dhgroups`) /
//! `_allow_any_host`, `nvmf_subsystem_listener_set_ana_state`,
//! `nvmf_subsystem_set_ns_ana_group`, `nvmf_discovery_add_referral` / `_remove_referral`
//! / `_get_referrals`, `nvmf_get_subsystems`, `nvmf_subsystem_get_listeners` /
//! `_get_controllers` / `_get_qpairs`, `nvmf_get_stats`, plus the `nvmf` framework
//! subsystem whose config writer recreates the transport and every subsystem. Mutations
//! answer once the new target view reached every reactor. Also the embedded default
//! configuration (`default_config`).

use super::ana::{self, AnaState};
use super::referral::Referral;
use super::secret::Hash;
use super::subsystem::{self, ListenAddr, SubType, Subsystem};
use super::target::{self, publish, with_target, TransportOpts};
use super::tcp;
use crate::reactor;
use crate::rpc::{self, config_entry, parse_params, Allowed, Responder, RpcError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// SPDK's `tgt_name`: which NVMe-oF target a method acts on. pollux has one, named as SPDK's
/// application names its own (`nvmf_tgt`); any other name fails to decode, naming the field.
#[derive(Debug)]
struct TargetName;

impl<'de> Deserialize<'de> for TargetName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if name == TARGET_NAME {
            Ok(TargetName)
        } else {
            Err(serde::de::Error::custom(format!(
                "Unable to find a target named {name:?} (pollux has one NVMe-oF target, {TARGET_NAME:?})"
            )))
        }
    }
}

/// The name of pollux's one NVMe-oF target (SPDK's nvmf_tgt application uses the same).
const TARGET_NAME: &str = "nvmf_tgt";

fn failed(msg: String) -> RpcError {
    RpcError::invalid_params(msg)
}

/// Publishes the registry and answers `value` once every reactor has it.
fn publish_then(responder: Responder, value: Value) {
    publish(move || responder.ok(value));
}

/// Applies a registry change; on success publishes it and answers `true`.
fn mutate(responder: Responder, change: impl FnOnce(&mut target::Target) -> Result<(), String>) {
    match with_target(change) {
        Ok(()) => publish_then(responder, json!(true)),
        Err(e) => responder.err(failed(e)),
    }
}

/// Runs `f` on the subsystem named by the params' `nqn` (inspection methods).
fn inspect(p: Option<Value>, f: impl FnOnce(&Subsystem) -> Value) -> Result<Value, RpcError> {
    let p: NqnOnly = parse_params(p)?;
    let _ = p.tgt_name;
    with_target(|t| {
        t.subsystem(&p.nqn)
            .map(f)
            .ok_or_else(|| failed(format!("nqn: subsystem {} not found", p.nqn)))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTransport {
    trtype: String,
    #[serde(default)]
    tgt_name: Option<TargetName>,
    max_queue_depth: Option<u16>,
    max_qpairs_per_ctrlr: Option<u16>,
    max_io_qpairs_per_ctrlr: Option<u16>,
    in_capsule_data_size: Option<u32>,
    max_io_size: Option<u32>,
    io_unit_size: Option<u32>,
    max_aq_depth: Option<u16>,
    num_shared_buffers: Option<u32>,
    buf_cache_size: Option<u32>,
    dif_insert_or_strip: Option<bool>,
    zcopy: Option<bool>,
    c2h_success: Option<bool>,
    sock_priority: Option<u32>,
    abort_timeout_sec: Option<u32>,
    ack_timeout: Option<u32>,
    control_msg_num: Option<u32>,
    kas: Option<u16>,
    min_kato: Option<u32>,
    handshake_timeout_ms: Option<u32>,
    // Keys SPDK's rpc.py sends for other transports: accepted and ignored.
    no_srq: Option<bool>,
    num_cqe: Option<i64>,
    max_srq_depth: Option<i64>,
    no_wr_batching: Option<bool>,
    acceptor_backlog: Option<i64>,
    acceptor_poll_rate: Option<i64>,
    disable_mappable_bar0: Option<bool>,
    disable_adaptive_irq: Option<bool>,
    disable_shadow_doorbells: Option<bool>,
    disable_command_passthru: Option<bool>,
    data_wr_pool_size: Option<i64>,
    // Newer SPDK names of the per-poll-group buffer cache (pollux caches per reactor).
    iobuf_small_cache_size: Option<u32>,
    iobuf_large_cache_size: Option<u32>,
    masked_oncs: Option<Vec<String>>,
    masked_fuses: Option<Vec<String>>,
}

impl CreateTransport {
    fn into_opts(self) -> Result<TransportOpts, String> {
        if !self.trtype.eq_ignore_ascii_case("tcp") {
            return Err(format!(
                "trtype: transport {} is not supported (only TCP)",
                self.trtype
            ));
        }
        if self.masked_oncs.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err("masked_oncs: masking ONCS features is not supported".into());
        }
        if self.masked_fuses.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err("masked_fuses: masking fused operations is not supported".into());
        }
        let _ignored = (
            self.iobuf_small_cache_size,
            self.iobuf_large_cache_size,
            self.tgt_name,
            self.no_srq,
            self.num_cqe,
            self.max_srq_depth,
            self.no_wr_batching,
            self.acceptor_backlog,
            self.acceptor_poll_rate,
            self.disable_mappable_bar0,
            self.disable_adaptive_irq,
            self.disable_shadow_doorbells,
            self.disable_command_passthru,
            self.data_wr_pool_size,
        );
        let d = TransportOpts::default();
        let io_qpairs = match (self.max_io_qpairs_per_ctrlr, self.max_qpairs_per_ctrlr) {
            (Some(n), _) => n,
            (None, Some(n)) => n.saturating_sub(1),
            (None, None) => d.max_io_qpairs_per_ctrlr,
        };
        Ok(TransportOpts {
            max_queue_depth: self.max_queue_depth.unwrap_or(d.max_queue_depth),
            max_io_qpairs_per_ctrlr: io_qpairs,
            in_capsule_data_size: self.in_capsule_data_size.unwrap_or(d.in_capsule_data_size),
            max_io_size: self.max_io_size.unwrap_or(d.max_io_size),
            io_unit_size: self.io_unit_size.unwrap_or(d.io_unit_size),
            max_aq_depth: self.max_aq_depth.unwrap_or(d.max_aq_depth),
            num_shared_buffers: self.num_shared_buffers.unwrap_or(d.num_shared_buffers),
            buf_cache_size: self.buf_cache_size.unwrap_or(d.buf_cache_size),
            dif_insert_or_strip: self.dif_insert_or_strip.unwrap_or(false),
            zcopy: self.zcopy.unwrap_or(false),
            c2h_success: self.c2h_success.unwrap_or(true),
            sock_priority: self.sock_priority.unwrap_or(0),
            abort_timeout_sec: self.abort_timeout_sec.unwrap_or(d.abort_timeout_sec),
            ack_timeout: self.ack_timeout.unwrap_or(0),
            control_msg_num: self.control_msg_num.unwrap_or(d.control_msg_num),
            kas: self.kas.unwrap_or(d.kas),
            min_kato: self.min_kato.unwrap_or(d.min_kato),
            handshake_timeout_ms: self.handshake_timeout_ms.unwrap_or(d.handshake_timeout_ms),
        })
    }
}

fn transport_json(o: &TransportOpts) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or_else(|_| json!({}));
    v["trtype"] = json!("TCP");
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSubsystem {
    nqn: String,
    tgt_name: Option<TargetName>,
    serial_number: Option<String>,
    model_number: Option<String>,
    #[serde(default)]
    allow_any_host: bool,
    #[serde(default)]
    max_namespaces: u32,
    #[serde(default)]
    ana_reporting: bool,
    min_cntlid: Option<u16>,
    max_cntlid: Option<u16>,
    // Sent by SPDK's rpc.py (false by default); the features are not implemented.
    passthrough: Option<bool>,
    enable_nssr: Option<bool>,
    dmrsl: Option<u32>,
    wzsl: Option<u32>,
    admin_label: Option<String>,
    // Deprecated (SPDK 25.5 to 26.5) spellings of dmrsl / wzsl.
    max_discard_size_kib: Option<u64>,
    max_write_zeroes_size_kib: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NqnOnly {
    nqn: String,
    tgt_name: Option<TargetName>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenAddress {
    trtype: String,
    adrfam: Option<String>,
    traddr: String,
    trsvcid: Option<String>,
}

impl ListenAddress {
    fn into_addr(self) -> ListenAddr {
        // SPDK spells the families IPv4 / IPv6 whatever the caller wrote.
        let adrfam = match self.adrfam {
            Some(f) if f.eq_ignore_ascii_case("ipv4") => "IPv4".into(),
            Some(f) if f.eq_ignore_ascii_case("ipv6") => "IPv6".into(),
            Some(f) => f,
            None if self.traddr.contains(':') => "IPv6".into(),
            None => "IPv4".into(),
        };
        ListenAddr {
            trtype: self.trtype,
            adrfam,
            traddr: self.traddr,
            trsvcid: self.trsvcid.unwrap_or_else(|| "4420".into()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerParams {
    nqn: String,
    listen_address: ListenAddress,
    tgt_name: Option<TargetName>,
    secure_channel: Option<bool>,
    sock_impl: Option<String>,
    ana_state: Option<String>,
    numa_id: Option<i64>,
}

impl ListenerParams {
    /// The sock impl of the listener: a secure channel is the `ssl` impl (as in SPDK).
    fn sock_impl(&self) -> Result<Option<&str>, String> {
        match (self.secure_channel, self.sock_impl.as_deref()) {
            (Some(true), None | Some("ssl")) => Ok(Some("ssl")),
            (Some(true), Some(other)) => Err(format!(
                "sock_impl: {other} cannot carry a secure channel (TLS needs the ssl impl)"
            )),
            (_, name) => Ok(name),
        }
    }

    /// Refuses what pollux does not implement; notes what has no effect here.
    fn check(&self, method: &str) -> Result<(), String> {
        if self.ana_state.is_some() && method != "nvmf_subsystem_add_listener" {
            return Err(format!(
                "ana_state: not a parameter of {method} (see nvmf_subsystem_listener_set_ana_state)"
            ));
        }
        if self.numa_id.is_some_and(|n| n >= 0) {
            rpc::without_effect(
                method,
                "numa_id",
                "connections are spread over all reactors whatever their NUMA node",
            );
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetAnaState {
    nqn: String,
    listen_address: ListenAddress,
    ana_state: String,
    anagrpid: Option<u32>,
    tgt_name: Option<String>,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetNsAnaGroup {
    nqn: String,
    nsid: u32,
    anagrpid: u32,
    tgt_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NsParams {
    bdev_name: String,
    nsid: Option<u32>,
    nguid: Option<String>,
    eui64: Option<String>,
    uuid: Option<String>,
    ptpl_file: Option<String>,
    anagrpid: Option<u32>,
    no_auto_visible: Option<bool>,
    // Sent as `false` by SPDK's rpc.py 25.5 to 26.5.
    hide_metadata: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNs {
    nqn: String,
    namespace: NsParams,
    tgt_name: Option<TargetName>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveNs {
    nqn: String,
    nsid: u32,
    tgt_name: Option<TargetName>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostParams {
    nqn: String,
    host: String,
    tgt_name: Option<TargetName>,
    psk: Option<String>,
    dhchap_key: Option<String>,
    dhchap_ctrlr_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetKeys {
    nqn: String,
    host: String,
    tgt_name: Option<TargetName>,
    dhchap_key: Option<String>,
    dhchap_ctrlr_key: Option<String>,
}

/// `nvmf_set_config`: of SPDK's params pollux implements the DH-HMAC-CHAP lists; the
/// others (admin_cmd_passthru, poll_groups_mask, discovery_filter) are refused by name. As in
/// SPDK it is a STARTUP method (`--wait-for-rpc`, before `framework_start_init`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetConfig {
    dhchap_digests: Option<Vec<String>>,
    dhchap_dhgroups: Option<Vec<String>>,
    admin_cmd_passthru: Option<Value>,
    poll_groups_mask: Option<Value>,
    discovery_filter: Option<Value>,
}

impl SetConfig {
    fn dhchap_policy(&self) -> Result<Option<target::DhchapPolicy>, RpcError> {
        for (field, v) in [
            ("admin_cmd_passthru", &self.admin_cmd_passthru),
            ("poll_groups_mask", &self.poll_groups_mask),
            ("discovery_filter", &self.discovery_filter),
        ] {
            if v.is_some() {
                return Err(failed(format!("{field}: not supported by pollux")));
            }
        }
        if self.dhchap_digests.is_none() && self.dhchap_dhgroups.is_none() {
            return Ok(None);
        }
        let mut policy = with_target(|t| (*t.view().dhchap).clone());
        if let Some(d) = &self.dhchap_digests {
            policy.digests = d
                .iter()
                .map(|name| {
                    [Hash::Sha256, Hash::Sha384, Hash::Sha512]
                        .into_iter()
                        .find(|h| h.name() == name)
                        .ok_or_else(|| {
                            failed(format!(
                                "dhchap_digests: unknown digest '{name}' (sha256, sha384, sha512)"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?;
            if policy.digests.is_empty() {
                return Err(failed("dhchap_digests: the list is empty".into()));
            }
        }
        if let Some(g) = &self.dhchap_dhgroups {
            policy.dhgroups = g
                .iter()
                .map(|name| {
                    target::DHGROUP_NAMES
                        .iter()
                        .position(|n| n == name)
                        .map(|i| i as u8)
                        .ok_or_else(|| {
                            failed(format!(
                                "dhchap_dhgroups: unknown DH group '{name}' ({})",
                                target::DHGROUP_NAMES.join(", ")
                            ))
                        })
                })
                .collect::<Result<_, _>>()?;
            if policy.dhgroups.is_empty() {
                return Err(failed("dhchap_dhgroups: the list is empty".into()));
            }
        }
        Ok(Some(policy))
    }
}

/// Resolves the keyring names of a host's DH-HMAC-CHAP keys and reads their secrets (main
/// reactor: the poll groups get these copies and never read a file): an unknown name, a
/// file that cannot be read or does not hold a DHHC-1 secret, or a controller key without
/// a host key, is an error naming the field.
fn host_keys(
    key: Option<&str>,
    ctrlr_key: Option<&str>,
) -> Result<Option<subsystem::HostKeys>, RpcError> {
    let resolve = |field: &str, name: &str| {
        let info = crate::keyring::lookup(name).map_err(|e| failed(format!("{field}: {e}")))?;
        let text = info.secret().map_err(|e| failed(format!("{field}: {e}")))?;
        let secret = super::secret::DhchapSecret::parse(&text)
            .map_err(|e| failed(format!("{field}: key '{name}' is not a DHHC-1 secret: {e}")))?;
        Ok::<_, RpcError>((info, secret))
    };
    match (key, ctrlr_key) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(failed(
            "dhchap_ctrlr_key: a controller key needs a host key (dhchap_key)".into(),
        )),
        (Some(k), c) => {
            let (key, secret) = resolve("dhchap_key", k)?;
            let (ctrlr_key, ctrlr_secret) = match c {
                Some(c) => {
                    let (i, s) = resolve("dhchap_ctrlr_key", c)?;
                    (Some(i), Some(s))
                }
                None => (None, None),
            };
            Ok(Some(subsystem::HostKeys {
                key,
                ctrlr_key,
                secret,
                ctrlr_secret,
            }))
        }
    }
}

/// The TLS PSK named `name` in the keyring (SPDK >= 24.01 takes a key name), read and
/// checked now (interchange format and CRC) so handshakes read no file.
fn host_psk(name: &str) -> Result<subsystem::HostPsk, RpcError> {
    let key = crate::keyring::lookup(name).map_err(|e| failed(format!("psk: {e}")))?;
    let text = key.secret().map_err(|e| failed(format!("psk: {e}")))?;
    let psk = crate::nvmf::psk::ConfiguredPsk::parse(&text)
        .map_err(|e| failed(format!("psk: key {name}: {e}")))?;
    Ok(subsystem::HostPsk {
        key,
        psk: std::sync::Arc::new(psk),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveHost {
    nqn: String,
    host: String,
    tgt_name: Option<TargetName>,
    /// SPDK 26.5+: how long to wait for the host's I/O when it is disconnected.
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NsHost {
    nqn: String,
    nsid: u32,
    host: String,
    tgt_name: Option<TargetName>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowAnyHost {
    nqn: String,
    allow_any_host: bool,
    tgt_name: Option<TargetName>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GetSubsystems {
    nqn: Option<String>,
    tgt_name: Option<TargetName>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GetTransports {
    trtype: Option<String>,
    tgt_name: Option<TargetName>,
}

fn parse_or_empty<T: serde::de::DeserializeOwned + Default>(
    p: Option<Value>,
) -> Result<T, RpcError> {
    match p {
        None | Some(Value::Null) => Ok(T::default()),
        p => parse_params(p),
    }
}

macro_rules! params {
    ($p:expr, $r:expr) => {
        match parse_params($p) {
            Ok(v) => v,
            Err(e) => return $r.err(e),
        }
    };
}

/// Registers the methods and the `nvmf` framework subsystem (main reactor).
pub fn register() {
    target::register_shutdown();

    rpc::register_async("nvmf_create_transport", Allowed::Both, |p, r| {
        let p: CreateTransport = params!(p, r);
        let opts = match p.into_opts() {
            Ok(o) => o,
            Err(e) => return r.err(failed(e)),
        };
        mutate(r, |t| t.create_transport(opts))
    });

    rpc::register("nvmf_set_max_subsystems", Allowed::StartupOnly, |p| {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Max {
            max_subsystems: u32,
        }
        let p: Max = parse_params(p)?;
        with_target(|t| t.set_max_subsystems(p.max_subsystems)).map_err(failed)?;
        Ok(json!(true))
    });

    rpc::register("nvmf_get_transports", Allowed::RuntimeOnly, |p| {
        let p: GetTransports = parse_or_empty(p)?;
        let _ = p.tgt_name;
        if let Some(t) = &p.trtype {
            if !t.eq_ignore_ascii_case("tcp") {
                return Err(failed(format!("trtype: transport {t} not found")));
            }
        }
        Ok(with_target(|t| {
            json!(t
                .transport()
                .map(transport_json)
                .into_iter()
                .collect::<Vec<_>>())
        }))
    });

    rpc::register_async("nvmf_create_subsystem", Allowed::RuntimeOnly, |p, r| {
        let p: CreateSubsystem = params!(p, r);
        let _ = p.tgt_name;
        for (field, value) in [
            ("dmrsl", p.dmrsl.map(u64::from)),
            ("wzsl", p.wzsl.map(u64::from)),
            ("max_discard_size_kib", p.max_discard_size_kib),
            ("max_write_zeroes_size_kib", p.max_write_zeroes_size_kib),
        ] {
            if value.unwrap_or(0) != 0 {
                return r.err(failed(format!(
                    "{field}: size limits for deallocate / write zeroes are not supported (0 = none)"
                )));
            }
        }
        if p.admin_label.is_some() {
            return r.err(failed(
                "admin_label: extended discovery log entries are not supported".into(),
            ));
        }
        if p.passthrough == Some(true) {
            return r.err(failed(
                "passthrough: NVMe passthrough is not supported".into(),
            ));
        }
        if p.enable_nssr == Some(true) {
            return r.err(failed(
                "enable_nssr: NVM subsystem reset is not supported".into(),
            ));
        }
        if let Err(e) = subsystem::valid_nqn(&p.nqn) {
            return r.err(failed(e));
        }
        let subtype = if p.nqn == crate::nvmf::wire::DISCOVERY_NQN {
            SubType::Discovery
        } else {
            SubType::Nvme
        };
        let mut s = Subsystem::new(0, &p.nqn, subtype);
        if let Some(sn) = p.serial_number {
            if sn.len() > 20 || !sn.is_ascii() {
                return r.err(failed(format!(
                    "serial_number: {sn} is not at most 20 ASCII characters"
                )));
            }
            s.serial_number = sn;
        }
        if let Some(mn) = p.model_number {
            if mn.len() > 40 || !mn.is_ascii() {
                return r.err(failed(format!(
                    "model_number: {mn} is not at most 40 ASCII characters"
                )));
            }
            s.model_number = mn;
        }
        s.allow_any_host = p.allow_any_host;
        s.max_namespaces = p.max_namespaces;
        if p.ana_reporting && subtype == SubType::Discovery {
            return r.err(failed(
                "ana_reporting: the discovery subsystem has no namespaces to report ANA of".into(),
            ));
        }
        s.ana_reporting = p.ana_reporting;
        s.min_cntlid = p.min_cntlid.unwrap_or(1);
        s.max_cntlid = p.max_cntlid.unwrap_or(0xffef);
        mutate(r, |t| t.create_subsystem(s))
    });

    rpc::register_async("nvmf_delete_subsystem", Allowed::RuntimeOnly, |p, r| {
        let p: NqnOnly = params!(p, r);
        let _ = p.tgt_name;
        mutate(r, |t| t.delete_subsystem(&p.nqn))
    });

    rpc::register_async(
        "nvmf_subsystem_add_listener",
        Allowed::RuntimeOnly,
        |p, r| {
            let p: ListenerParams = params!(p, r);
            let _ = &p.tgt_name;
            if let Err(e) = p.check("nvmf_subsystem_add_listener") {
                return r.err(failed(e));
            }
            let state = match p
                .ana_state
                .as_deref()
                .map(|s| AnaState::parse("ana_state", s))
            {
                Some(Err(e)) => return r.err(failed(e)),
                Some(Ok(s)) => Some(s),
                None => None,
            };
            let sock_impl = match p.sock_impl() {
                Ok(i) => i.map(str::to_string),
                Err(e) => return r.err(failed(e)),
            };
            let addr = p.listen_address.into_addr();
            mutate(r, |t| {
                let reporting = t.subsystem(&p.nqn).is_some_and(|s| s.ana_reporting);
                if let Some(st) = state.filter(|st| !reporting && *st != AnaState::Optimized) {
                    return Err(format!(
                        "ana_state: {} needs a subsystem created with ana_reporting (without it \
                         every path is optimized)",
                        st.name()
                    ));
                }
                let state = state.unwrap_or(AnaState::Optimized);
                t.add_listener(&p.nqn, addr, sock_impl.as_deref(), state)
                    .map(drop)
            })
        },
    );

    rpc::register_async(
        "nvmf_subsystem_remove_listener",
        Allowed::RuntimeOnly,
        |p, r| {
            let p: ListenerParams = params!(p, r);
            if let Err(e) = p.check("nvmf_subsystem_remove_listener") {
                return r.err(failed(e));
            }
            let addr = p.listen_address.into_addr();
            mutate(r, |t| t.remove_listener(&p.nqn, &addr))
        },
    );

    rpc::register_async("nvmf_subsystem_add_ns", Allowed::RuntimeOnly, |p, r| {
        let p: AddNs = params!(p, r);
        let mut ns = p.namespace;
        let _ = p.tgt_name;
        // As in SPDK, group 0 means the default (the nsid).
        ns.anagrpid = ns.anagrpid.filter(|g| *g != 0);
        if ns.anagrpid.is_some()
            && !with_target(|t| t.subsystem(&p.nqn).is_some_and(|s| s.ana_reporting))
        {
            return r.err(failed(format!(
                "namespace.anagrpid: {} was not created with ana_reporting (no ANA groups)",
                p.nqn
            )));
        }
        if ns.hide_metadata.is_some() {
            rpc::without_effect(
                "nvmf_subsystem_add_ns",
                "namespace.hide_metadata",
                "pollux bdevs carry no metadata",
            );
        }
        let nguid = match ns.nguid.as_deref().map(subsystem::parse_hex::<16>) {
            Some(None) => return r.err(failed("namespace.nguid: not 16 bytes of hex".into())),
            Some(v) => v,
            None => None,
        };
        let eui64 = match ns.eui64.as_deref().map(subsystem::parse_hex::<8>) {
            Some(None) => return r.err(failed("namespace.eui64: not 8 bytes of hex".into())),
            Some(v) => v,
            None => None,
        };
        let uuid = match ns.uuid.as_deref().map(subsystem::parse_hex::<16>) {
            Some(None) => return r.err(failed("namespace.uuid: not a UUID".into())),
            Some(v) => v,
            None => None,
        };
        match with_target(|t| {
            let auto_visible = ns.no_auto_visible != Some(true);
            let ids = target::NsIds {
                nguid,
                eui64,
                uuid,
                anagrpid: ns.anagrpid,
            };
            let nsid = t.add_ns(&p.nqn, &ns.bdev_name, ns.nsid, ids, auto_visible)?;
            if let Some(path) = ns.ptpl_file.as_deref().filter(|p| !p.is_empty()) {
                if let Err(e) = restore_ptpl(t, &p.nqn, nsid, path) {
                    let _ = t.remove_ns(&p.nqn, nsid);
                    return Err(e);
                }
            }
            Ok(nsid)
        }) {
            Ok(nsid) => publish_then(r, json!(nsid)),
            Err(e) => r.err(failed(e)),
        }
    });

    rpc::register_async(
        "nvmf_subsystem_listener_set_ana_state",
        Allowed::RuntimeOnly,
        |p, r| {
            let p: SetAnaState = params!(p, r);
            let _ = p.tgt_name;
            let state = match AnaState::parse("ana_state", &p.ana_state) {
                Ok(s) => s,
                Err(e) => return r.err(failed(e)),
            };
            let addr = p.listen_address.into_addr();
            mutate(r, |t| {
                let s = t.nvme_subsystem_mut(&p.nqn)?;
                if ana::set_state(s, &addr, state, p.anagrpid)? {
                    tracing::info!(nqn = %p.nqn, traddr = %addr.traddr, trsvcid = %addr.trsvcid,
                        state = state.name(), anagrpid = ?p.anagrpid, "ANA state changed");
                }
                Ok(())
            })
        },
    );

    rpc::register_async(
        "nvmf_subsystem_set_ns_ana_group",
        Allowed::RuntimeOnly,
        |p, r| {
            let p: SetNsAnaGroup = params!(p, r);
            let _ = p.tgt_name;
            mutate(r, |t| {
                ana::set_ns_group(t.nvme_subsystem_mut(&p.nqn)?, p.nsid, p.anagrpid).map(drop)
            })
        },
    );

    rpc::register_async(
        "nvmf_discovery_add_referral",
        Allowed::RuntimeOnly,
        |p, r| {
            let p: ReferralParams = params!(p, r);
            match p.parse() {
                Ok((referral, _)) => mutate(r, |t| {
                    t.add_referral(referral);
                    Ok(())
                }),
                Err(e) => r.err(failed(e)),
            }
        },
    );

    rpc::register_async(
        "nvmf_discovery_remove_referral",
        Allowed::RuntimeOnly,
        |p, r| {
            let p: ReferralParams = params!(p, r);
            if p.secure_channel.is_some() {
                return r.err(failed(
                    "secure_channel: not a parameter of nvmf_discovery_remove_referral".into(),
                ));
            }
            match p.parse() {
                Ok((referral, _)) => {
                    mutate(r, |t| t.remove_referral(&referral.addr, &referral.subnqn))
                }
                Err(e) => r.err(failed(e)),
            }
        },
    );

    rpc::register("nvmf_discovery_get_referrals", Allowed::RuntimeOnly, |p| {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct TgtOnly {
            tgt_name: Option<String>,
        }
        let p: TgtOnly = parse_or_empty(p)?;
        let _ = p.tgt_name;
        Ok(with_target(|t| {
            json!(t
                .referrals()
                .iter()
                .map(Referral::to_json)
                .collect::<Vec<_>>())
        }))
    });

    rpc::register_async("nvmf_subsystem_remove_ns", Allowed::RuntimeOnly, |p, r| {
        let p: RemoveNs = params!(p, r);
        let _ = p.tgt_name;
        mutate(r, |t| t.remove_ns(&p.nqn, p.nsid))
    });

    rpc::register_async("nvmf_subsystem_add_host", Allowed::RuntimeOnly, |p, r| {
        let p: HostParams = params!(p, r);
        let psk = match p.psk.as_deref().map(host_psk).transpose() {
            Ok(k) => k,
            Err(e) => return r.err(e),
        };
        let keys = match host_keys(p.dhchap_key.as_deref(), p.dhchap_ctrlr_key.as_deref()) {
            Ok(k) => k,
            Err(e) => return r.err(e),
        };
        let _ = p.tgt_name;
        mutate(r, |t| {
            t.add_host(&p.nqn, &p.host, keys)?;
            match psk {
                Some(psk) => t.set_host_psk(&p.nqn, &p.host, psk),
                None => Ok(()),
            }
        })
    });

    rpc::register_async("nvmf_set_config", Allowed::StartupOnly, |p, r| {
        let p: SetConfig = params!(p, r);
        let policy = match p.dhchap_policy() {
            Ok(v) => v,
            Err(e) => return r.err(e),
        };
        mutate(r, |t| {
            if let Some(policy) = policy {
                t.set_dhchap_policy(policy);
            }
            Ok(())
        })
    });

    rpc::register_async("nvmf_subsystem_set_keys", Allowed::RuntimeOnly, |p, r| {
        let p: SetKeys = params!(p, r);
        let _ = p.tgt_name;
        let keys = match host_keys(p.dhchap_key.as_deref(), p.dhchap_ctrlr_key.as_deref()) {
            Ok(k) => k,
            Err(e) => return r.err(e),
        };
        mutate(r, |t| t.set_host_keys(&p.nqn, &p.host, keys))
    });

    rpc::register_async(
        "nvmf_subsystem_remove_host",
        Allowed::RuntimeOnly,
        |p, r| {
            let p: RemoveHost = params!(p, r);
            let _ = p.tgt_name;
            if p.timeout_ms.is_some() {
                rpc::without_effect(
                    "nvmf_subsystem_remove_host",
                    "timeout_ms",
                    "the removed host's queues close as soon as the change is published, without a wait",
                );
            }
            mutate(r, |t| t.remove_host(&p.nqn, &p.host))
        },
    );

    for (method, visible) in [("nvmf_ns_add_host", true), ("nvmf_ns_remove_host", false)] {
        rpc::register_async(method, Allowed::RuntimeOnly, move |p, r| {
            let p: NsHost = params!(p, r);
            let _ = p.tgt_name;
            mutate(r, |t| t.ns_set_host(&p.nqn, p.nsid, &p.host, visible))
        });
    }

    rpc::register_async(
        "nvmf_subsystem_allow_any_host",
        Allowed::RuntimeOnly,
        |p, r| {
            let p: AllowAnyHost = params!(p, r);
            let _ = p.tgt_name;
            mutate(r, |t| t.allow_any_host(&p.nqn, p.allow_any_host))
        },
    );

    rpc::register("nvmf_get_subsystems", Allowed::RuntimeOnly, |p| {
        let p: GetSubsystems = parse_or_empty(p)?;
        let _ = p.tgt_name;
        with_target(|t| {
            let list: Vec<Value> = t
                .subsystems()
                .iter()
                .filter(|s| p.nqn.as_ref().is_none_or(|n| *n == s.nqn))
                .map(Subsystem::to_json)
                .collect();
            if let (Some(n), true) = (&p.nqn, list.is_empty()) {
                return Err(failed(format!("nqn: subsystem {n} not found")));
            }
            Ok(json!(list))
        })
    });

    rpc::register("nvmf_subsystem_get_listeners", Allowed::RuntimeOnly, |p| {
        inspect(p, |s| {
            json!(s
                .listeners
                .iter()
                .map(|l| {
                    if s.ana_reporting {
                        json!({"address": l.to_json(), "ana_states": ana::listener_json(s, l)})
                    } else {
                        json!({"address": l.to_json(), "ana_state": "optimized"})
                    }
                })
                .collect::<Vec<_>>())
        })
    });

    rpc::register(
        "nvmf_subsystem_get_controllers",
        Allowed::RuntimeOnly,
        |p| {
            inspect(p, |s| {
                let d = s.directory.lock();
                json!(d
                    .iter()
                    .map(|(id, e)| json!({
                        "cntlid": id,
                        "hostnqn": e.hostnqn,
                        "hostid": subsystem::format_uuid(&e.hostid),
                        "num_io_qpairs": e.io_qpairs.len(),
                        "peer_address": e.peer,
                    }))
                    .collect::<Vec<_>>())
            })
        },
    );

    rpc::register("nvmf_subsystem_get_qpairs", Allowed::RuntimeOnly, |p| {
        inspect(p, |s| {
            let d = s.directory.lock();
            let mut out = Vec::new();
            for (id, e) in d.iter() {
                let one = |qid: u16, core: u32| {
                    json!({
                        "cntlid": id,
                        "qid": qid,
                        "state": "active",
                        "thread": format!("nvmf_tgt_poll_group_{core}"),
                        "listen_address": e.listen.to_json(),
                        "peer_address": {"trtype": "TCP", "traddr": e.peer},
                    })
                };
                out.push(one(0, e.admin.core));
                for (qid, r) in &e.io_qpairs {
                    out.push(one(*qid, r.core));
                }
            }
            json!(out)
        })
    });

    rpc::register_async("nvmf_get_stats", Allowed::RuntimeOnly, |p, r| {
        if let Err(e) = parse_or_empty::<GetTransports>(p) {
            return r.err(e);
        }
        let groups: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(Vec::new()));
        let each = groups.clone();
        reactor::for_each_reactor(
            move || {
                if let Some(v) = tcp::group_stats() {
                    each.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                }
            },
            move || {
                let g = groups.lock().unwrap_or_else(|e| e.into_inner()).clone();
                r.ok(json!({"tick_rate": 1_000_000_000u64, "poll_groups": g}))
            },
        );
    });

    rpc::register_subsystem("nvmf", &["bdev", "sock", "keyring"], write_config);
}

/// The `nvmf` subsystem's config: the transport, then each subsystem with its listeners,
/// hosts and namespaces.
pub fn write_config() -> Vec<Value> {
    with_target(|t| {
        let mut out = vec![config_entry(
            "nvmf_set_max_subsystems",
            json!({"max_subsystems": t.max_subsystems()}),
        )];
        let dhchap = &t.view().dhchap;
        out.push(config_entry(
            "nvmf_set_config",
            json!({
                "dhchap_digests": dhchap.digests.iter().map(|h| h.name()).collect::<Vec<_>>(),
                "dhchap_dhgroups": dhchap.dhgroups.iter()
                    .map(|&g| target::DHGROUP_NAMES[g as usize]).collect::<Vec<_>>(),
            }),
        ));
        if let Some(o) = t.transport() {
            out.push(config_entry("nvmf_create_transport", transport_json(o)));
        }
        out.extend(
            t.referrals()
                .iter()
                .map(|r| config_entry("nvmf_discovery_add_referral", r.to_json())),
        );
        let listener = |s: &Subsystem, l: &subsystem::ListenAddr| {
            let mut p = json!({"nqn": s.nqn, "listen_address": l.to_json()});
            if let Some(name) = t.listener_sock_impl(l) {
                p["sock_impl"] = json!(name);
                if name == "ssl" {
                    p["secure_channel"] = json!(true);
                }
            }
            let mut out = Vec::new();
            if s.ana_reporting {
                if let Some(st) = ana::base_state(s, l) {
                    p["ana_state"] = json!(st.name());
                }
            }
            out.push(config_entry("nvmf_subsystem_add_listener", p));
            if s.ana_reporting {
                out.extend(
                    ana::config_overrides(s, l)
                        .into_iter()
                        .map(|p| config_entry("nvmf_subsystem_listener_set_ana_state", p)),
                );
            }
            out
        };
        for s in t.subsystems().iter().filter(|s| s.is_discovery()) {
            out.extend(s.listeners.iter().flat_map(|l| listener(s, l)));
        }
        for s in t.subsystems().iter().filter(|s| !s.is_discovery()) {
            out.push(config_entry(
                "nvmf_create_subsystem",
                json!({
                    "nqn": s.nqn,
                    "serial_number": s.serial_number,
                    "model_number": s.model_number,
                    "allow_any_host": s.allow_any_host,
                    "max_namespaces": s.max_namespaces,
                    "min_cntlid": s.min_cntlid,
                    "max_cntlid": s.max_cntlid,
                    "ana_reporting": s.ana_reporting,
                }),
            ));
            out.extend(s.listeners.iter().flat_map(|l| listener(s, l)));
            for h in &s.hosts {
                let mut params = json!({"nqn": s.nqn, "host": h});
                if let Some(p) = s.host_psks.get(h) {
                    params["psk"] = json!(p.key.name);
                }
                if let Some(keys) = s.host_keys.get(h) {
                    params["dhchap_key"] = json!(keys.key.name);
                    if let Some(c) = &keys.ctrlr_key {
                        params["dhchap_ctrlr_key"] = json!(c.name);
                    }
                }
                out.push(config_entry("nvmf_subsystem_add_host", params));
            }
            for ns in s.namespaces.values() {
                let mut namespace = json!({
                    "nsid": ns.nsid,
                    "bdev_name": ns.bdev.name(),
                    "uuid": subsystem::format_uuid(&ns.uuid),
                    "no_auto_visible": ns.visible_hosts.is_some(),
                });
                ns.put_ids(&mut namespace);
                if s.ana_reporting {
                    namespace["anagrpid"] = json!(ns.anagrpid);
                }
                if let Some(f) = &ns.ptpl_file {
                    namespace["ptpl_file"] = json!(f.as_ref());
                }
                out.push(config_entry(
                    "nvmf_subsystem_add_ns",
                    json!({"nqn": s.nqn, "namespace": namespace}),
                ));
                for host in ns.visible_hosts.iter().flat_map(|h| h.iter()) {
                    out.push(config_entry(
                        "nvmf_ns_add_host",
                        json!({"nqn": s.nqn, "nsid": ns.nsid, "host": host}),
                    ));
                }
            }
        }
        out
    })
}

/// Gives a new namespace its PTPL file and the reservations the file holds (read here, on
/// the main reactor, as SPDK does at `nvmf_subsystem_add_ns`; a few hundred bytes).
fn restore_ptpl(t: &mut target::Target, nqn: &str, nsid: u32, path: &str) -> Result<(), String> {
    let uuid = t
        .subsystem(nqn)
        .and_then(|s| s.namespaces.get(&nsid))
        .map(|ns| ns.bdev.info.uuid.to_string())
        .ok_or_else(|| format!("nsid: namespace {nsid} of {nqn} not found"))?;
    let state = crate::nvmf::reservation_target::load_ptpl(path, &uuid)?.unwrap_or_default();
    t.set_ns_ptpl(nqn, nsid, path, state)
}

/// The default export's NQN.
pub const DEFAULT_NQN: &str = "nqn.2016-06.io.pollux:cnode1";
/// The default listen port.
pub const DEFAULT_PORT: u16 = 4420;

/// Applies `calls` in order through the in-process RPC path (main reactor); `done` gets the
/// first error.
pub fn apply_calls(
    calls: Vec<(String, Value)>,
    done: impl FnOnce(Result<(), String>) + Send + 'static,
) {
    step(calls.into_iter(), Box::new(done));
}

type CallsDone = Box<dyn FnOnce(Result<(), String>) + Send>;

fn step(mut calls: std::vec::IntoIter<(String, Value)>, done: CallsDone) {
    let Some((method, params)) = calls.next() else {
        return done(Ok(()));
    };
    let core = reactor::current_core().unwrap_or(0);
    let m = method.clone();
    rpc::call(
        &method,
        Some(params),
        // The answer may come from another reactor: continue here by message.
        Responder::new(move |res| {
            reactor::send_to(core, move || match res {
                Ok(_) => step(calls, done),
                Err(e) => done(Err(format!("{m}: {}", e.message))),
            })
        }),
    );
}

/// The embedded default configuration: a 256 MiB malloc bdev exported as namespace 1 of
/// `nqn.2016-06.io.pollux:cnode1` (any host) on 127.0.0.1:4420.
pub fn default_config() {
    let calls: Vec<(String, Value)> = vec![
        (
            "bdev_malloc_create".into(),
            json!({"name": "Malloc0", "num_blocks": 65536, "block_size": 4096}),
        ),
        ("nvmf_create_transport".into(), json!({"trtype": "TCP"})),
        (
            "nvmf_create_subsystem".into(),
            json!({"nqn": DEFAULT_NQN, "serial_number": "POLLUX00000000000001",
                   "model_number": "pollux malloc", "allow_any_host": true}),
        ),
        (
            "nvmf_subsystem_add_ns".into(),
            json!({"nqn": DEFAULT_NQN, "namespace": {"bdev_name": "Malloc0", "nsid": 1}}),
        ),
        (
            "nvmf_subsystem_add_listener".into(),
            json!({"nqn": DEFAULT_NQN, "listen_address": {"trtype": "TCP", "adrfam": "IPv4",
                   "traddr": "127.0.0.1", "trsvcid": DEFAULT_PORT.to_string()}}),
        ),
    ];
    apply_calls(calls, |r| match r {
        Ok(()) => eprintln!(
            "pollux: default configuration: 256 MiB malloc bdev Malloc0 exported as namespace 1 \
             of {DEFAULT_NQN} (any host) on NVMe/TCP 127.0.0.1:{DEFAULT_PORT}"
        ),
        Err(e) => eprintln!("pollux: the default configuration failed: {e}"),
    });
}
