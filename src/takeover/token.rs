//! Takeover ids and tokens.
//!
//! A token is 32 random bytes (256 bits) as base64url without padding. Only its SHA-256
//! is kept; a presented token is hashed and compared in constant time against every hash
//! of the takeover (no early exit on the first match), so timing tells nothing about any.
//! Hashing first also makes the comparison independent of the presented length.
//!
//! A takeover starts with one pair (control, view). Since the plaintext is never kept, a
//! platform that subscribes to the events while the takeover is live gets a new pair
//! ([`TokenSet::issue`]); the set is bounded, and it dies with its takeover.

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

/// A fresh pair: the control token, the view token and their hashes.
pub(crate) fn new_pair() -> (SecretString, SecretString, TokenHashes) {
    let (control_token, control) = new_token();
    let (view_token, view) = new_token();
    (control_token, view_token, TokenHashes { control, view })
}

/// The two hashes of one issued pair.
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

/// Every pair issued for one takeover: the first (made with the takeover) and the most
/// recent replays. At most `max_pairs`; issuing beyond retires the oldest replayed pair,
/// never the first.
pub(crate) struct TokenSet {
    pairs: Vec<TokenHashes>,
    max_pairs: usize,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSet({} pairs, [REDACTED])", self.pairs.len())
    }
}

impl TokenSet {
    /// `max_pairs` below 2 is taken as 2: the first pair and one replay.
    pub(crate) fn new(first: TokenHashes, max_pairs: usize) -> Self {
        Self {
            pairs: vec![first],
            max_pairs: max_pairs.max(2),
        }
    }

    /// Adds a pair; `true` if the oldest replayed pair was retired to make room.
    pub(crate) fn issue(&mut self, pair: TokenHashes) -> bool {
        let retired = self.pairs.len() >= self.max_pairs;
        if retired {
            self.pairs.remove(1);
        }
        self.pairs.push(pair);
        retired
    }

    pub(crate) fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Which access `token` grants, if any. Every hash is compared, whatever matches.
    pub(crate) fn check(&self, token: &str) -> Option<Access> {
        let presented = hash(token);
        let mut control = Choice::from(0);
        let mut view = Choice::from(0);
        for pair in &self.pairs {
            control |= presented.ct_eq(&pair.control);
            view |= presented.ct_eq(&pair.view);
        }
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
        assert!(!format!("{hashes:?}").contains(&hex::encode(control_hash)));
        let set = TokenSet::new(hashes, 16);
        assert_eq!(set.check(control.expose_secret()), Some(Access::Control));
        assert_eq!(set.check(view.expose_secret()), Some(Access::ViewOnly));
        assert_eq!(set.check("nope"), None);
        assert_eq!(set.check(""), None);
        assert!(!format!("{set:?}").contains(&hex::encode(control_hash)));
        let id = new_id();
        assert_eq!(id.len(), 22);
        assert!(well_formed(&id));
    }

    #[test]
    fn a_full_set_retires_its_oldest_replayed_pair_and_keeps_the_first() {
        let (first_control, first_view, first) = new_pair();
        let mut set = TokenSet::new(first, 3);
        let pairs: Vec<_> = (0..3).map(|_| new_pair()).collect();
        assert!(!set.issue(pairs[0].2));
        assert!(!set.issue(pairs[1].2));
        assert_eq!(set.len(), 3);
        // Full: the oldest replay (pairs[0]) goes, the first pair stays.
        assert!(set.issue(pairs[2].2));
        assert_eq!(set.len(), 3);
        let check = |token: &SecretString| set.check(token.expose_secret());
        assert_eq!(check(&first_control), Some(Access::Control));
        assert_eq!(check(&first_view), Some(Access::ViewOnly));
        assert_eq!(check(&pairs[0].0), None);
        assert_eq!(check(&pairs[0].1), None);
        for (control, view, _) in &pairs[1..] {
            assert_eq!(check(control), Some(Access::Control));
            assert_eq!(check(view), Some(Access::ViewOnly));
        }
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
