//! The causal context as clients carry it: an opaque, URL-safe token in `X-Causal-Context`.
//!
//! The token is base64url (no padding) of the bincode-encoded version vector. Clients must treat
//! it as opaque: read it from a response, send it back on the next write of the same key.

use crate::core::version_vector::VersionVector;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use thiserror::Error;

pub const HEADER: &str = "x-causal-context";
const MAX_TOKEN_BYTES: usize = 64 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed causal context: {0}")]
pub struct BadContext(String);

pub fn encode(context: &VersionVector) -> String {
    let bytes = bincode::serde::encode_to_vec(context, bincode::config::standard())
        .expect("version vectors always encode");
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode(token: &str) -> Result<VersionVector, BadContext> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(BadContext("too long".into()));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|e| BadContext(e.to_string()))?;
    let config = bincode::config::standard().with_limit::<MAX_TOKEN_BYTES>();
    let (context, used): (VersionVector, usize) =
        bincode::serde::decode_from_slice(&bytes, config).map_err(|e| BadContext(e.to_string()))?;
    if used != bytes.len() {
        return Err(BadContext("trailing bytes".into()));
    }
    Ok(context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::version_vector::Actor;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let vv: VersionVector = [(Actor("A.1".into()), 3), (Actor("B.2".into()), 1)]
            .into_iter()
            .collect();
        assert_eq!(decode(&encode(&vv)).unwrap(), vv);
        assert_eq!(
            decode(&encode(&VersionVector::new())).unwrap(),
            VersionVector::new()
        );
        assert!(decode("not base64 !!").is_err());
        assert!(decode("AAAAAAAA").is_err());
    }
}
