//! PDU headers encoded straight into socket write chunks, for the target and the host.

use super::pdu::{encode_header_into, EncodeError, EncodedHeader, PduHeader, TxConfig};
use crate::buf::{Chunk, INLINE_CAP};

/// Appends the header of a PDU to a write request's chunks, encoded in place in an inline
/// chunk: the data path builds a header per I/O, and encoding it straight where it is sent
/// from saves a staging buffer, its zeroing and two copies. Every header fits
/// [`INLINE_CAP`](crate::buf::INLINE_CAP) (76 bytes at most, 128 with the largest PDA).
pub fn push_header_chunk(
    chunks: &mut Vec<Chunk>,
    hdr: &PduHeader,
    data_len: u32,
    cfg: &TxConfig,
) -> Result<EncodedHeader, EncodeError> {
    chunks.push(Chunk::Inline {
        data: [0u8; INLINE_CAP],
        len: 0,
    });
    let Some(Chunk::Inline { data, len }) = chunks.last_mut() else {
        unreachable!("an inline chunk was pushed just above");
    };
    match encode_header_into(hdr, data_len, cfg, data) {
        Ok(enc) => {
            *len = enc.len as u8;
            Ok(enc)
        }
        Err(e) => {
            chunks.pop();
            Err(e)
        }
    }
}
