//! The transport's methods: `nvmf_create_transport` and `nvmf_get_transports`.
//!
//! pollux has the TCP transport only; `nvmf_create_transport` accepts and ignores the keys
//! SPDK's rpc.py sends for other transports.

use super::{failed, mutate, parse_or_empty, TargetName};
use crate::nvmf::target::{with_target, TransportOpts};
use crate::rpc::{Responder, RpcResult};
use serde::Deserialize;
use serde_json::{json, Value};

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

/// A transport's options as `nvmf_get_transports` answers them (and the config replays them).
pub(super) fn transport_json(o: &TransportOpts) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or_else(|_| json!({}));
    v["trtype"] = json!("TCP");
    v
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct GetTransports {
    trtype: Option<String>,
    tgt_name: Option<TargetName>,
}

pub(super) fn nvmf_create_transport(params: Option<Value>, responder: Responder) {
    let p: CreateTransport = params!(params, responder);
    match p.into_opts() {
        Ok(opts) => mutate(responder, |t| t.create_transport(opts)),
        Err(e) => responder.err(failed(e)),
    }
}

pub(super) fn nvmf_get_transports(params: Option<Value>) -> RpcResult {
    let p: GetTransports = parse_or_empty(params)?;
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
}
