//! Redacting wrappers for plaintext secrets.
//!
//! Every plaintext credential value lives in one of these types from the moment it is
//! decrypted or parsed until it is written out or zeroized. Their `Debug` prints
//! `[REDACTED]`, they have no `Display`, and their memory is zeroized on drop.

pub use secrecy::{ExposeSecret, SecretBox, SecretSlice, SecretString};

/// Secret bytes (file contents, pre-serialized response bodies).
pub type SecretBytes = SecretSlice<u8>;

/// Builds a `SecretBytes` from an owned vector without copying it.
pub fn secret_bytes(bytes: Vec<u8>) -> SecretBytes {
    SecretSlice::from(bytes)
}
