//! Entry points for the fuzz targets (`fuzz/`), not part of the API: what parses a client's
//! JSON bodies.

/// Parses a batch publish body as the API does.
pub fn parse_batch(json: &[u8], max_body: usize) -> bool {
    crate::batch::parse(json, max_body).is_ok()
}
