//! Takeover ids and tokens.
//!
//! A token is 32 random bytes (256 bits) as base64url without padding. Only its SHA-256
//! is kept; a presented token is hashed and compared in constant time against both of the
//! takeover's hashes (no early exit on the first), so timing tells nothing about either.
//! Hashing first also makes the comparison independent of the presented length.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::relay::Access;
use crate::secret::SecretString;

const TOKEN_BYTES: usize = 32;
const ID_BYTES: usize = 16;

/// A fresh takeover id: 128 random bits, URL-safe (22 characters).
pub(crate) fn new_id() -> String {
    let mut bytes = [0u8; ID_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh token and its hash.
pub(crate) fn new_token() -> (SecretString, [u8; 32]) {
    let mut bytes = zeroize::Zeroizing::new([0u8; TOKEN_BYTES]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    let token = SecretString::from(URL_SAFE_NO_PAD.encode(bytes.as_ref()));
    let hash = hash(secrecy::ExposeSecret::expose_secret(&token));
    (token, hash)
}

pub(crate) fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The two hashes of one takeover.
#[derive(Clone, Copy)]
pub(crate) struct TokenHashes {
    pub(crate) control: [u8; 32],
    pub(crate) view: [u8; 32],
}

impl std::fmt::Debug for TokenHashes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHashes([REDACTED])")
    }
}

impl TokenHashes {
    /// Which access `token` grants, if any. Both hashes are always compared.
    pub(crate) fn check(&self, token: &str) -> Option<Access> {
        let presented = hash(token);
        let control: Choice = presented.ct_eq(&self.control);
        let view: Choice = presented.ct_eq(&self.view);
        if bool::from(control) {
            Some(Access::Control)
        } else if bool::from(view) {
            Some(Access::ViewOnly)
        } else {
            None
        }
    }
}

/// A token as it may appear in a header: base64url, 1..=256 characters. Anything else is
/// refused before hashing.
pub(crate) fn well_formed(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= crate::relay::MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn tokens_are_long_random_and_checked() {
        let (control, control_hash) = new_token();
        let (view, view_hash) = new_token();
        assert_eq!(control.expose_secret().len(), 43);
        assert!(well_formed(control.expose_secret()));
        assert_ne!(control.expose_secret(), view.expose_secret());
        let hashes = TokenHashes {
            control: control_hash,
            view: view_hash,
        };
        assert_eq!(hashes.check(control.expose_secret()), Some(Access::Control));
        assert_eq!(hashes.check(view.expose_secret()), Some(Access::ViewOnly));
        assert_eq!(hashes.check("nope"), None);
        assert_eq!(hashes.check(""), None);
        assert!(!format!("{hashes:?}").contains(&hex::encode(control_hash)));
        let id = new_id();
        assert_eq!(id.len(), 22);
        assert!(well_formed(&id));
    }

    #[test]
    fn well_formed_table() {
        let long = "a".repeat(257);
        let table = [
            ("abc-_09", true),
            ("", false),
            ("a=", false),
            ("a+b", false),
            ("a b", false),
            (long.as_str(), false),
        ];
        for (token, want) in table {
            assert_eq!(well_formed(token), want, "{token:?}");
        }
    }
}
