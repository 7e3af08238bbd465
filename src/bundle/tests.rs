//! The bad-bundle corpus: each way a bundle can be wrong gives its own error.

use proptest::prelude::*;

use super::format::{self, FIXED_OVERHEAD};
use super::*;
use crate::keys::{PlatformSigningKey, SandboxSecretKey};
use crate::secret::ExposeSecret;

const NOW: u64 = 1_800_000_000;
const PLAINTEXT: &[u8] = br#"{"connections":{"openai":{"fields":{"api_key":"sk-canary"}}}}"#;

struct Fixture {
    sandbox: SandboxSecretKey,
    platform: PlatformSigningKey,
    other_platform: PlatformSigningKey,
    recipient: crate::keys::SandboxPublicKey,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            sandbox: SandboxSecretKey::from_bytes([0x11; 32]),
            platform: PlatformSigningKey::from_bytes([0x22; 32]),
            other_platform: PlatformSigningKey::from_bytes([0x33; 32]),
            recipient: SandboxSecretKey::from_bytes([0x11; 32]).public_key(),
        }
    }

    fn opener(&self) -> Opener {
        Opener {
            sandbox_id: "sbx-1".into(),
            sandbox_key: SandboxSecretKey::from_bytes([0x11; 32]),
            trusted: vec![self.other_platform.public_key(), self.platform.public_key()],
        }
    }

    fn seal_with<'a>(&'a self, edit: impl FnOnce(&mut SealRequest<'a>)) -> Vec<u8> {
        let mut req = SealRequest {
            sandbox_id: "sbx-1",
            version: 5,
            issued_at: NOW - 10,
            expires_at: NOW + 3600,
            recipient: &self.recipient,
            signer: &self.platform,
            plaintext: PLAINTEXT,
        };
        edit(&mut req);
        seal(&req).unwrap()
    }

    fn good(&self) -> Vec<u8> {
        self.seal_with(|_| {})
    }

    /// Re-signs damaged bytes with the trusted platform key, so a test reaches the checks
    /// after the signature.
    fn resign(&self, mut bytes: Vec<u8>) -> Vec<u8> {
        let at = bytes.len() - 64;
        let sig = self.platform.sign(&bytes[..at]);
        bytes[at..].copy_from_slice(&sig);
        bytes
    }
}

fn region(bytes: &[u8], name: &str) -> std::ops::Range<usize> {
    format::regions(bytes)
        .unwrap()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap()
        .1
}

#[test]
fn opens_a_good_bundle() {
    let f = Fixture::new();
    let bytes = f.good();
    assert_eq!(bytes.len(), FIXED_OVERHEAD + 5 + PLAINTEXT.len() + 16);
    for installed in [None, Some(0), Some(4)] {
        let opened = f.opener().open(&bytes, NOW, installed).unwrap();
        assert_eq!(opened.sandbox_id, "sbx-1");
        assert_eq!(opened.version, 5);
        assert_eq!(opened.issued_at, NOW - 10);
        assert_eq!(opened.expires_at, NOW + 3600);
        assert_eq!(opened.plaintext.expose_secret(), PLAINTEXT);
    }
    // The expiry second itself is still valid; the skew window is inclusive.
    assert!(f.opener().open(&bytes, NOW + 3600, None).is_ok());
    assert!(f
        .opener()
        .open(&bytes, NOW - 10 - MAX_CLOCK_SKEW_SECS, None)
        .is_ok());
    // Sealing is randomized (a fresh ephemeral key each time).
    assert_ne!(f.good(), bytes);
}

#[test]
fn empty_plaintext_round_trips() {
    let f = Fixture::new();
    let bytes = f.seal_with(|r| r.plaintext = b"");
    let opened = f.opener().open(&bytes, NOW, None).unwrap();
    assert!(opened.plaintext.expose_secret().is_empty());
}

#[test]
fn corpus_each_failure_has_its_own_error() {
    let f = Fixture::new();
    let good = f.good();
    let other_key = SandboxSecretKey::from_bytes([0x44; 32]).public_key();
    let untrusted = PlatformSigningKey::from_bytes([0x55; 32]);
    let flip = |at: usize| {
        let mut b = good.clone();
        b[at] ^= 0x01;
        b
    };
    let mut zero_sig = good.clone();
    let sig_at = good.len() - 64;
    zero_sig[sig_at..].fill(0);
    let mut trailing = good.clone();
    trailing.push(0);
    let oversized = vec![0u8; MAX_BUNDLE_BYTES + 1];
    // A validly signed bundle whose ciphertext was altered before signing.
    let bad_ct_signed = f.resign(flip(region(&good, "ciphertext").start));
    let bad_enc_signed = f.resign(flip(region(&good, "enc").start));

    type Check = Box<dyn Fn(&BundleError) -> bool>;
    let is = |code: &'static str| -> Check { Box::new(move |e: &BundleError| e.code() == code) };
    let cases: Vec<(&str, Vec<u8>, Option<u64>, Check)> = vec![
        (
            "oversized",
            oversized,
            None,
            Box::new(
                |e| matches!(e, BundleError::Oversized { size, limit } if *size == MAX_BUNDLE_BYTES + 1 && *limit == MAX_BUNDLE_BYTES),
            ),
        ),
        ("trailing", trailing, None, is("bundle_malformed")),
        (
            "bad magic",
            flip(region(&good, "magic").start),
            None,
            is("bundle_unsupported"),
        ),
        (
            "bad format",
            flip(region(&good, "format").start),
            None,
            is("bundle_unsupported"),
        ),
        (
            "bad kem",
            flip(region(&good, "kem").start + 1),
            None,
            is("bundle_unsupported"),
        ),
        (
            "bad kdf",
            flip(region(&good, "kdf").start + 1),
            None,
            is("bundle_unsupported"),
        ),
        (
            "bad aead",
            flip(region(&good, "aead").start + 1),
            None,
            is("bundle_unsupported"),
        ),
        (
            "unsigned",
            zero_sig,
            None,
            Box::new(|e| *e == BundleError::Untrusted),
        ),
        (
            "untrusted signer",
            f.seal_with(|r| r.signer = &untrusted),
            None,
            Box::new(|e| *e == BundleError::Untrusted),
        ),
        (
            "signer field altered",
            flip(region(&good, "signer").start),
            None,
            Box::new(|e| *e == BundleError::Untrusted),
        ),
        (
            "wrong sandbox",
            f.seal_with(|r| r.sandbox_id = "sbx-2"),
            None,
            Box::new(
                |e| matches!(e, BundleError::WrongSandbox { expected, found } if expected == "sbx-1" && found == "sbx-2"),
            ),
        ),
        (
            "wrong key",
            f.seal_with(|r| r.recipient = &other_key),
            None,
            Box::new(|e| *e == BundleError::WrongKey),
        ),
        (
            "expired",
            f.seal_with(|r| {
                r.issued_at = NOW - 100;
                r.expires_at = NOW - 1
            }),
            None,
            Box::new(|e| {
                *e == BundleError::Expired {
                    expires_at: NOW - 1,
                    now: NOW,
                }
            }),
        ),
        (
            "issued in the future",
            f.seal_with(|r| {
                r.issued_at = NOW + MAX_CLOCK_SKEW_SECS + 1;
                r.expires_at = NOW + 7200
            }),
            None,
            is("bundle_malformed"),
        ),
        (
            "replayed equal",
            good.clone(),
            Some(5),
            Box::new(|e| {
                *e == BundleError::Replayed {
                    version: 5,
                    installed: 5,
                }
            }),
        ),
        (
            "replayed older",
            good.clone(),
            Some(9),
            Box::new(|e| {
                *e == BundleError::Replayed {
                    version: 5,
                    installed: 9,
                }
            }),
        ),
        (
            "ciphertext altered before signing",
            bad_ct_signed,
            None,
            Box::new(|e| *e == BundleError::Tampered),
        ),
        (
            "enc altered before signing",
            bad_enc_signed,
            None,
            Box::new(|e| *e == BundleError::Tampered),
        ),
    ];
    for (name, bytes, installed, check) in cases {
        match f.opener().open(&bytes, NOW, installed) {
            Err(e) => assert!(check(&e), "{name}: unexpected {e:?}"),
            Ok(_) => panic!("{name}: opened"),
        }
    }
}

/// Flipping any single byte of any region is refused, with the error of the first check
/// that region fails.
#[test]
fn tampered_byte_in_each_region() {
    let f = Fixture::new();
    let good = f.good();
    for (name, range) in format::regions(&good).unwrap() {
        for at in [range.start, range.end - 1] {
            let mut b = good.clone();
            b[at] ^= 0x80;
            let err = f.opener().open(&b, NOW, None).unwrap_err();
            let expected: &[&str] = match name {
                "magic" | "format" | "kem" | "kdf" | "aead" => &["bundle_unsupported"],
                // A different length shifts every later field: malformed.
                "id_len" | "ct_len" => &["bundle_malformed"],
                // 0x80 makes the id non-ASCII.
                "sandbox_id" => &["bundle_malformed"],
                "signer" => &["bundle_untrusted"],
                // Version/times changes could also make issued_at > expires_at.
                "issued_at" | "expires_at" => &["bundle_tampered", "bundle_malformed"],
                _ => &["bundle_tampered"],
            };
            assert!(expected.contains(&err.code()), "{name}@{at}: {err:?}");
        }
    }
}

#[test]
fn truncated_at_each_boundary_is_malformed() {
    let f = Fixture::new();
    let good = f.good();
    for (name, range) in format::regions(&good).unwrap() {
        for cut in [range.start, range.start + range.len() / 2] {
            let err = f.opener().open(&good[..cut], NOW, None).unwrap_err();
            assert!(
                matches!(err, BundleError::Malformed(_)),
                "cut in {name} at {cut}: {err:?}"
            );
        }
    }
}

#[test]
fn errors_never_contain_plaintext_or_keys() {
    let f = Fixture::new();
    let good = f.good();
    let mut all = String::new();
    for at in 0..good.len() {
        let mut b = good.clone();
        b[at] ^= 0xFF;
        if let Err(e) = f.opener().open(&b, NOW, None) {
            all.push_str(&format!("{e} {e:?}\n"));
        }
    }
    assert!(!all.contains("canary"));
    assert!(!all.contains(&hex::encode([0x11u8; 32])));
    let opened = f.opener().open(&good, NOW, None).unwrap();
    assert!(!format!("{opened:?}").contains("canary"));
}

#[test]
fn seal_refuses_bad_requests() {
    let f = Fixture::new();
    let recipient = f.sandbox.public_key();
    let big = vec![0u8; MAX_PLAINTEXT_BYTES + 129];
    let base = |id: &'static str, pt: &'static [u8]| SealRequest {
        sandbox_id: id,
        version: 1,
        issued_at: 1,
        expires_at: 2,
        recipient: &recipient,
        signer: &f.platform,
        plaintext: pt,
    };
    assert!(matches!(
        seal(&base("", b"x")),
        Err(BundleError::Malformed(_))
    ));
    assert!(matches!(
        seal(&base("a/b", b"x")),
        Err(BundleError::Malformed(_))
    ));
    let mut late = base("a", b"x");
    late.issued_at = 3;
    assert!(matches!(seal(&late), Err(BundleError::Malformed(_))));
    let mut huge = base("a", b"");
    huge.plaintext = &big;
    assert!(matches!(seal(&huge), Err(BundleError::Oversized { .. })));
    // The largest plaintext with the longest id fits exactly.
    let max_id = "i".repeat(MAX_SANDBOX_ID_LEN);
    let mut max = base("a", b"");
    max.sandbox_id = &max_id;
    max.plaintext = &big[..MAX_PLAINTEXT_BYTES];
    assert_eq!(seal(&max).unwrap().len(), MAX_BUNDLE_BYTES);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let f = Fixture::new();
        prop_assert!(f.opener().open(&bytes, NOW, None).is_err());
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_prefix_never_open(tail in proptest::collection::vec(any::<u8>(), 0..400)) {
        let f = Fixture::new();
        let mut bytes = f.good()[..format::PREFIX_LEN].to_vec();
        bytes.extend_from_slice(&tail);
        prop_assert!(f.opener().open(&bytes, NOW, None).is_err());
    }

    #[test]
    fn mutations_never_open_unless_unchanged(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        extra in proptest::collection::vec(any::<u8>(), 0..3),
    ) {
        let f = Fixture::new();
        let good = f.good();
        let mut b = good.clone();
        for (at, value) in &edits {
            let i = at.index(b.len());
            b[i] = *value;
        }
        if let Some(cut) = cut {
            let n = cut.index(b.len());
            b.truncate(n);
        }
        b.extend_from_slice(&extra);
        let result = f.opener().open(&b, NOW, None);
        if b == good {
            prop_assert!(result.is_ok());
        } else {
            prop_assert!(result.is_err(), "a changed bundle opened");
        }
    }
}
