//! The one HPKE suite (RFC 9180): DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305, base mode, single shot, empty aad. This is exactly what Python's
//! `cryptography` `hpke.Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305)`
//! `.encrypt(pt, pk, info)` computes; it returns `enc ‖ ciphertext`.

use hpke::{Deserializable as _, Serializable as _};
use zeroize::Zeroizing;

use super::format::{ENC_LEN, INFO_PREFIX, TAG_LEN};
use super::BundleError;
use crate::keys::{SandboxPublicKey, SandboxSecretKey};
use crate::secret::{secret_bytes, SecretBytes};

pub type Kem = hpke::kem::X25519HkdfSha256;
pub type Kdf = hpke::kdf::HkdfSha256;
pub type Aead = hpke::aead::ChaCha20Poly1305;

/// The HPKE `info` of a bundle: the domain prefix and the exact header bytes, so every
/// header field is bound into the key schedule as well as signed.
pub fn info(header_bytes: &[u8]) -> Vec<u8> {
    let mut info = Vec::with_capacity(INFO_PREFIX.len() + header_bytes.len());
    info.extend_from_slice(INFO_PREFIX);
    info.extend_from_slice(header_bytes);
    info
}

/// The OS RNG behind the `rand_core` 0.9 traits that `hpke` 0.13 takes (the rest of the
/// crate uses `rand` 0.8; both read getrandom).
pub struct OsRng;

impl hpke::rand_core::RngCore for OsRng {
    fn next_u32(&mut self) -> u32 {
        rand::RngCore::next_u32(&mut rand::rngs::OsRng)
    }
    fn next_u64(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut rand::rngs::OsRng)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, dst)
    }
}

impl hpke::rand_core::CryptoRng for OsRng {}

/// Base-mode single-shot seal to `recipient`: returns `(enc, ciphertext ‖ tag)`. The
/// plaintext is copied into a zeroizing buffer and encrypted in place.
pub fn seal<R>(
    recipient: &SandboxPublicKey,
    info: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<([u8; ENC_LEN], Vec<u8>), BundleError>
where
    R: hpke::rand_core::CryptoRng + hpke::rand_core::RngCore,
{
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&recipient.0).map_err(|_| {
        BundleError::Malformed("recipient public key is not a valid X25519 key".into())
    })?;
    let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
    buf.extend_from_slice(plaintext);
    let (enc, tag) = hpke::single_shot_seal_in_place_detached::<Aead, Kdf, Kem, R>(
        &hpke::OpModeS::Base,
        &pk,
        info,
        &mut buf,
        &[],
        rng,
    )
    // Encapsulation fails only for a low-order recipient key (all-zero shared secret).
    .map_err(|_| BundleError::Malformed("cannot encapsulate to the recipient public key".into()))?;
    buf.extend_from_slice(&tag.to_bytes());
    let mut enc_bytes = [0u8; ENC_LEN];
    enc_bytes.copy_from_slice(&enc.to_bytes());
    // `buf` now holds ciphertext only; hand it out without the zeroizing wrapper.
    Ok((enc_bytes, std::mem::take(&mut *buf)))
}

/// Base-mode single-shot open. Any failure (bad enc, bad tag) is one opaque error.
pub fn open(
    key: &SandboxSecretKey,
    enc: &[u8; ENC_LEN],
    info: &[u8],
    ciphertext: &[u8],
) -> Result<SecretBytes, hpke::HpkeError> {
    let raw = key.to_raw();
    let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(&raw[..])?;
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc)?;
    let split = ciphertext
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(hpke::HpkeError::OpenError)?;
    let tag = hpke::aead::AeadTag::<Aead>::from_bytes(&ciphertext[split..])?;
    // Decrypted in place in a zeroizing buffer; on success moved (not copied) into the
    // secret type. ChaCha20-Poly1305 checks the tag before decrypting, so a failure
    // leaves only ciphertext behind.
    let mut buf = Zeroizing::new(ciphertext[..split].to_vec());
    hpke::single_shot_open_in_place_detached::<Aead, Kdf, Kem>(
        &hpke::OpModeR::Base,
        &sk,
        &enc,
        info,
        &mut buf,
        &[],
        &tag,
    )?;
    Ok(secret_bytes(std::mem::take(&mut *buf)))
}
