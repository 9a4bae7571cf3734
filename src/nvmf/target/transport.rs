//! The TCP transport's options (SPDK's `nvmf_create_transport` / `nvmf_get_transports`).

use serde::{Deserialize, Serialize};

/// The TCP transport's options (SPDK's `nvmf_create_transport` / `nvmf_get_transports`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportOpts {
    pub max_queue_depth: u16,
    pub max_io_qpairs_per_ctrlr: u16,
    pub in_capsule_data_size: u32,
    pub max_io_size: u32,
    pub io_unit_size: u32,
    pub max_aq_depth: u16,
    pub num_shared_buffers: u32,
    pub buf_cache_size: u32,
    pub dif_insert_or_strip: bool,
    pub zcopy: bool,
    pub c2h_success: bool,
    pub sock_priority: u32,
    pub abort_timeout_sec: u32,
    pub ack_timeout: u32,
    pub control_msg_num: u32,
    /// Keep-alive granularity reported in Identify Controller (KAS, 100 ms units).
    pub kas: u16,
    /// Smallest keep-alive timeout accepted (ms); a smaller KATO is raised to it.
    pub min_kato: u32,
    /// A connection that has not completed its IC exchange and Connect within this many
    /// milliseconds is closed (pollux's own key; bounds idle and half-open connections).
    pub handshake_timeout_ms: u32,
}

impl Default for TransportOpts {
    fn default() -> Self {
        Self {
            max_queue_depth: 128,
            max_io_qpairs_per_ctrlr: 127,
            in_capsule_data_size: 4096,
            max_io_size: 131072,
            io_unit_size: 131072,
            max_aq_depth: 128,
            num_shared_buffers: 511,
            buf_cache_size: 32,
            dif_insert_or_strip: false,
            zcopy: false,
            c2h_success: true,
            sock_priority: 0,
            abort_timeout_sec: 1,
            ack_timeout: 0,
            control_msg_num: 32,
            kas: 10,
            min_kato: 10_000,
            handshake_timeout_ms: 30_000,
        }
    }
}

impl TransportOpts {
    /// Checks the limits the transport relies on, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=4096).contains(&self.max_queue_depth) {
            return Err(format!(
                "max_queue_depth: {} is not in 2..=4096",
                self.max_queue_depth
            ));
        }
        if !(2..=4096).contains(&self.max_aq_depth) {
            return Err(format!(
                "max_aq_depth: {} is not in 2..=4096",
                self.max_aq_depth
            ));
        }
        if self.max_io_qpairs_per_ctrlr == 0 {
            return Err("max_io_qpairs_per_ctrlr: must be at least 1".into());
        }
        if self.max_io_size < 4096
            || self.max_io_size > 1 << 20
            || !self.max_io_size.is_multiple_of(4096)
        {
            return Err(format!(
                "max_io_size: {} must be a multiple of 4096 in 4096..=1048576",
                self.max_io_size
            ));
        }
        if self.in_capsule_data_size > 128 * 1024 || !self.in_capsule_data_size.is_multiple_of(16) {
            return Err(format!(
                "in_capsule_data_size: {} must be a multiple of 16 up to 131072",
                self.in_capsule_data_size
            ));
        }
        if self.handshake_timeout_ms == 0 {
            return Err("handshake_timeout_ms: must be at least 1".into());
        }
        if self.io_unit_size < 512 {
            return Err(format!("io_unit_size: {} is below 512", self.io_unit_size));
        }
        Ok(())
    }
}
