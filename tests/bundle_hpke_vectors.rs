//! RFC 9180 Appendix A test vectors for the bundle's HPKE suite: DHKEM(X25519,
//! HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305 (kem_id 32, kdf_id 1, aead_id 3), modes 0
//! (base, what bundles use) and 2 (auth). The data in tests/data is the official CFRG
//! vector file (cfrg/draft-irtf-cfrg-hpke test-vectors.json at 5f503c5, the RFC's),
//! filtered to this suite and otherwise unmodified.
//!
//! The sender side is made deterministic by an RNG that yields the vector's `ikmE`: HPKE's
//! `GenerateKeyPair` is `DeriveKeyPair(random)`, so the ephemeral key becomes `skEm`.

use grexal_sidecar::bundle::suite::{Aead, Kdf, Kem};
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    mode: u8,
    kem_id: u16,
    kdf_id: u16,
    aead_id: u16,
    info: String,
    #[serde(rename = "ikmR")]
    ikm_r: String,
    #[serde(rename = "ikmE")]
    ikm_e: String,
    #[serde(rename = "ikmS")]
    ikm_s: Option<String>,
    #[serde(rename = "skRm")]
    sk_rm: String,
    #[serde(rename = "pkRm")]
    pk_rm: String,
    #[serde(rename = "skEm")]
    sk_em: String,
    #[serde(rename = "pkEm")]
    pk_em: String,
    #[serde(rename = "pkSm")]
    pk_sm: Option<String>,
    enc: String,
    encryptions: Vec<Encryption>,
    exports: Vec<Export>,
}

#[derive(Deserialize)]
struct Encryption {
    aad: String,
    ct: String,
    pt: String,
}

#[derive(Deserialize)]
struct Export {
    exporter_context: String,
    #[serde(rename = "L")]
    len: usize,
    exported_value: String,
}

/// Yields fixed bytes once: the vector's ephemeral input keying material.
struct FixedRng(Vec<u8>);

impl hpke::rand_core::RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        unreachable!("HPKE only fills bytes")
    }
    fn next_u64(&mut self) -> u64 {
        unreachable!("HPKE only fills bytes")
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        assert_eq!(
            dst.len(),
            self.0.len(),
            "HPKE asked for a different amount of randomness"
        );
        dst.copy_from_slice(&self.0);
        self.0.clear();
    }
}
impl hpke::rand_core::CryptoRng for FixedRng {}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("vector hex")
}

fn vectors() -> Vec<Vector> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/hpke-vectors-x25519-sha256-chacha.json"
    );
    let vs: Vec<Vector> = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert!(vs.iter().any(|v| v.mode == 0), "no base-mode vector");
    for v in &vs {
        assert_eq!((v.kem_id, v.kdf_id, v.aead_id), (32, 1, 3));
    }
    vs
}

#[test]
fn rfc9180_vectors_reproduce() {
    for v in vectors() {
        let info = h(&v.info);
        let (sk_r, pk_r) = Kem::derive_keypair(&h(&v.ikm_r));
        assert_eq!(
            sk_r.to_bytes().to_vec(),
            h(&v.sk_rm),
            "mode {}: skRm",
            v.mode
        );
        assert_eq!(
            pk_r.to_bytes().to_vec(),
            h(&v.pk_rm),
            "mode {}: pkRm",
            v.mode
        );
        let (sk_e, pk_e) = Kem::derive_keypair(&h(&v.ikm_e));
        assert_eq!(sk_e.to_bytes().to_vec(), h(&v.sk_em));
        assert_eq!(pk_e.to_bytes().to_vec(), h(&v.pk_em));

        let sender = v.ikm_s.as_ref().map(|ikm| Kem::derive_keypair(&h(ikm)));
        if let (Some((_, pk_s)), Some(pk_sm)) = (&sender, &v.pk_sm) {
            assert_eq!(pk_s.to_bytes().to_vec(), h(pk_sm));
        }
        let (mode_s, mode_r) = match (v.mode, sender) {
            (0, None) => (OpModeS::Base, OpModeR::Base),
            (2, Some((sk_s, pk_s))) => (OpModeS::Auth((sk_s, pk_s.clone())), OpModeR::Auth(pk_s)),
            (m, _) => panic!("unexpected mode {m}"),
        };

        // Sender: deterministic encapsulation gives the vector's enc, then every
        // ciphertext in sequence order.
        let mut rng = FixedRng(h(&v.ikm_e));
        let (enc, mut sctx) =
            hpke::setup_sender::<Aead, Kdf, Kem, _>(&mode_s, &pk_r, &info, &mut rng).unwrap();
        assert_eq!(enc.to_bytes().to_vec(), h(&v.enc), "mode {}: enc", v.mode);

        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&h(&v.enc)).unwrap();
        let mut rctx = hpke::setup_receiver::<Aead, Kdf, Kem>(&mode_r, &sk_r, &enc, &info).unwrap();
        for (seq, e) in v.encryptions.iter().enumerate() {
            let ct = sctx.seal(&h(&e.pt), &h(&e.aad)).unwrap();
            assert_eq!(ct, h(&e.ct), "mode {} seq {seq}: ciphertext", v.mode);
            let pt = rctx.open(&h(&e.ct), &h(&e.aad)).unwrap();
            assert_eq!(pt, h(&e.pt), "mode {} seq {seq}: plaintext", v.mode);
        }
        for x in &v.exports {
            let mut out = vec![0u8; x.len];
            rctx.export(&h(&x.exporter_context), &mut out).unwrap();
            assert_eq!(out, h(&x.exported_value), "mode {}: export", v.mode);
            sctx.export(&h(&x.exporter_context), &mut out).unwrap();
            assert_eq!(out, h(&x.exported_value), "mode {}: sender export", v.mode);
        }
    }
}

/// The functions bundles use (`bundle::suite::seal`/`open`: single shot, base mode, empty
/// aad) derive the vector's `enc` from its `ikmE` and round-trip through the vector's
/// recipient key. (The vectors' messages all have a non-empty aad, so their ciphertexts
/// are checked above through the generic context API.)
#[test]
fn bundle_suite_opens_the_base_vector() {
    use grexal_sidecar::keys::SandboxSecretKey;
    use grexal_sidecar::secret::ExposeSecret;
    let v = vectors().into_iter().find(|v| v.mode == 0).unwrap();
    let key = SandboxSecretKey::from_bytes(h(&v.sk_rm).try_into().unwrap());
    assert_eq!(key.public_key().0.to_vec(), h(&v.pk_rm));
    let first = &v.encryptions[0];
    let enc: [u8; 32] = h(&v.enc).try_into().unwrap();
    assert!(!first.aad.is_empty());
    let mut rng = FixedRng(h(&v.ikm_e));
    let (enc2, ct) = grexal_sidecar::bundle::suite::seal(
        &key.public_key(),
        &h(&v.info),
        &h(&first.pt),
        &mut rng,
    )
    .unwrap();
    assert_eq!(enc2, enc, "deterministic ephemeral gives the vector's enc");
    let opened = grexal_sidecar::bundle::suite::open(&key, &enc, &h(&v.info), &ct).unwrap();
    assert_eq!(opened.expose_secret(), &h(&first.pt)[..]);
}
