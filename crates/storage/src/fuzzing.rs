//! Entry points for the fuzz targets (`fuzz/`), not part of the API: what decodes untrusted
//! bytes, reachable without a log around it.

use bytes::Bytes;

/// Decodes a record payload of `kind`; an error for anything malformed, never a panic.
pub fn decode_record(kind: u8, payload: &[u8]) -> bool {
    crate::record::Record::decode(kind, Bytes::copy_from_slice(payload)).is_ok()
}

/// Parses a frame under the salt `salt`, and decodes its record when it is one.
pub fn parse_frame(salt: u32, bytes: &[u8]) -> bool {
    let salt = crate::frame::Salt::new(salt);
    match crate::frame::parse_frame(&Bytes::copy_from_slice(bytes), salt) {
        Ok(f) => crate::record::Record::decode(f.kind, f.payload).is_ok(),
        Err(_) => false,
    }
}
