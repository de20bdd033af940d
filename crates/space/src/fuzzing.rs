//! Entry points for the fuzz targets (`fuzz/`), not part of the API: what decodes untrusted
//! bytes, reachable without a Space around it.

/// Decodes a checkpoint's snapshot; an error for anything malformed, never a panic.
pub fn decode_snapshot(bytes: &[u8]) -> bool {
    crate::snapshot::decode(bytes::Bytes::copy_from_slice(bytes)).is_ok()
}
