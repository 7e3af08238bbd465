//! The byte layout of a bundle (docs/bundle-format.md, "Layout"): encoding, and parsing
//! in two phases — the fixed prefix first (is this our format and suite at all?), then
//! the rest, where every length is checked against what is actually there.

use std::ops::Range;

use super::BundleError;

pub const MAGIC: [u8; 4] = *b"GXB1";
pub const FORMAT_VERSION: u8 = 1;
/// RFC 9180 identifiers of the one suite we speak.
pub const KEM_ID: u16 = 0x0020; // DHKEM(X25519, HKDF-SHA256)
pub const KDF_ID: u16 = 0x0001; // HKDF-SHA256
pub const AEAD_ID: u16 = 0x0003; // ChaCha20-Poly1305

pub const MAX_SANDBOX_ID_LEN: usize = 128;
pub const KEY_LEN: usize = 32;
pub const ENC_LEN: usize = 32;
pub const TAG_LEN: usize = 16;
pub const SIGNATURE_LEN: usize = 64;

/// magic, format version, three suite ids.
pub const PREFIX_LEN: usize = 4 + 1 + 2 + 2 + 2;
/// Everything but the sandbox id and the ciphertext: prefix, id length, version,
/// issued_at, expires_at, recipient, signer, enc, ciphertext length, signature.
pub const FIXED_OVERHEAD: usize =
    PREFIX_LEN + 1 + 8 + 8 + 8 + KEY_LEN + KEY_LEN + ENC_LEN + 4 + SIGNATURE_LEN;

/// The domain-separation prefix of the HPKE `info`: `info = INFO_PREFIX ‖ header`.
pub const INFO_PREFIX: &[u8] = b"grexal-sidecar bundle v1\0";

/// The public, signed fields of a bundle. Unauthenticated until the signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub sandbox_id: String,
    pub version: u64,
    pub issued_at: u64,
    pub expires_at: u64,
    pub recipient: [u8; KEY_LEN],
    pub signer: [u8; KEY_LEN],
}

/// A parsed bundle: ranges into the input, so nothing is copied before verification.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub header: Header,
    /// The header bytes (offset 0 up to, not including, `enc`): the HPKE info suffix.
    pub header_bytes: &'a [u8],
    pub enc: &'a [u8; ENC_LEN],
    pub ciphertext: &'a [u8],
    /// Everything the signature covers: header, enc, ciphertext length, ciphertext.
    pub signed: &'a [u8],
    pub signature: &'a [u8; SIGNATURE_LEN],
}

/// A sandbox id: 1..=128 bytes of `[A-Za-z0-9._:-]`.
pub fn valid_sandbox_id(id: &str) -> bool {
    (1..=MAX_SANDBOX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Encodes the header (everything before `enc`). The caller checked the sandbox id.
pub fn encode_header(h: &Header) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_OVERHEAD + h.sandbox_id.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&KEM_ID.to_be_bytes());
    out.extend_from_slice(&KDF_ID.to_be_bytes());
    out.extend_from_slice(&AEAD_ID.to_be_bytes());
    // valid_sandbox_id bounds the length to 128, so it fits a byte.
    out.push(h.sandbox_id.len() as u8);
    out.extend_from_slice(h.sandbox_id.as_bytes());
    out.extend_from_slice(&h.version.to_be_bytes());
    out.extend_from_slice(&h.issued_at.to_be_bytes());
    out.extend_from_slice(&h.expires_at.to_be_bytes());
    out.extend_from_slice(&h.recipient);
    out.extend_from_slice(&h.signer);
    out
}

/// Appends enc and the length-prefixed ciphertext to an encoded header: the signed part.
pub fn encode_body(
    header: Vec<u8>,
    enc: &[u8; ENC_LEN],
    ciphertext: &[u8],
) -> Result<Vec<u8>, BundleError> {
    let len = u32::try_from(ciphertext.len()).map_err(|_| BundleError::Oversized {
        size: header.len() + ciphertext.len() + FIXED_OVERHEAD,
        limit: super::MAX_BUNDLE_BYTES,
    })?;
    let mut out = header;
    out.reserve(ENC_LEN + 4 + ciphertext.len() + SIGNATURE_LEN);
    out.extend_from_slice(enc);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(ciphertext);
    Ok(out)
}

/// A cursor that turns "not enough bytes" into one `Malformed` error naming the field.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], BundleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| BundleError::Malformed(format!("truncated in {field}")))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<&'a [u8; N], BundleError> {
        let slice = self.take(N, field)?;
        // `take` returned exactly N bytes.
        slice
            .try_into()
            .map_err(|_| BundleError::Malformed(format!("truncated in {field}")))
    }

    fn u64(&mut self, field: &str) -> Result<u64, BundleError> {
        Ok(u64::from_be_bytes(*self.array::<8>(field)?))
    }
}

/// Parses a bundle no larger than the limit (the caller checked). Format and suite are
/// checked as soon as the prefix is read: the rest of the layout depends on them. The
/// prefix is read whole before any of it is judged, so input shorter than the prefix is
/// `Malformed` whatever it starts with (docs/bundle-format.md, step 2 before step 3).
pub fn parse(bytes: &[u8]) -> Result<Parsed<'_>, BundleError> {
    if bytes.len() < PREFIX_LEN {
        return Err(BundleError::Malformed("truncated in prefix".into()));
    }
    let mut r = Reader { bytes, pos: 0 };
    let magic = r.array::<4>("magic")?;
    if *magic != MAGIC {
        return Err(BundleError::Unsupported(
            "not a grexal bundle (bad magic)".into(),
        ));
    }
    let format = r.take(1, "format version")?[0];
    let kem = u16::from_be_bytes(*r.array::<2>("kem id")?);
    let kdf = u16::from_be_bytes(*r.array::<2>("kdf id")?);
    let aead = u16::from_be_bytes(*r.array::<2>("aead id")?);
    if format != FORMAT_VERSION {
        return Err(BundleError::Unsupported(format!("format version {format}")));
    }
    if (kem, kdf, aead) != (KEM_ID, KDF_ID, AEAD_ID) {
        return Err(BundleError::Unsupported(format!(
            "HPKE suite kem 0x{kem:04x}, kdf 0x{kdf:04x}, aead 0x{aead:04x}"
        )));
    }

    let id_len = usize::from(r.take(1, "sandbox id length")?[0]);
    if id_len == 0 || id_len > MAX_SANDBOX_ID_LEN {
        return Err(BundleError::Malformed(format!(
            "sandbox id length {id_len} is outside 1..={MAX_SANDBOX_ID_LEN}"
        )));
    }
    let id_bytes = r.take(id_len, "sandbox id")?;
    let sandbox_id = std::str::from_utf8(id_bytes)
        .ok()
        .filter(|id| valid_sandbox_id(id))
        .ok_or_else(|| {
            BundleError::Malformed("sandbox id has characters outside [A-Za-z0-9._:-]".into())
        })?
        .to_owned();
    let version = r.u64("version")?;
    let issued_at = r.u64("issued_at")?;
    let expires_at = r.u64("expires_at")?;
    let recipient = *r.array::<KEY_LEN>("recipient key")?;
    let signer = *r.array::<KEY_LEN>("signer key")?;
    let header_end = r.pos;
    let enc = r.array::<ENC_LEN>("enc")?;
    let ct_len = u32::from_be_bytes(*r.array::<4>("ciphertext length")?) as usize;
    if ct_len < TAG_LEN {
        return Err(BundleError::Malformed(format!(
            "ciphertext length {ct_len} is shorter than the {TAG_LEN}-byte tag"
        )));
    }
    let ciphertext = r.take(ct_len, "ciphertext")?;
    let signed_end = r.pos;
    let signature = r.array::<SIGNATURE_LEN>("signature")?;
    if r.pos != bytes.len() {
        return Err(BundleError::Malformed(format!(
            "{} trailing bytes after the signature",
            bytes.len() - r.pos
        )));
    }
    if issued_at > expires_at {
        return Err(BundleError::Malformed(
            "issued_at is after expires_at".into(),
        ));
    }
    Ok(Parsed {
        header: Header {
            sandbox_id,
            version,
            issued_at,
            expires_at,
            recipient,
            signer,
        },
        header_bytes: &bytes[..header_end],
        enc,
        ciphertext,
        signed: &bytes[..signed_end],
        signature,
    })
}

/// Byte ranges of each region of a well-formed bundle, for tests that damage one region.
pub fn regions(bytes: &[u8]) -> Option<Vec<(&'static str, Range<usize>)>> {
    let id_len = usize::from(*bytes.get(PREFIX_LEN)?);
    let mut at = 0;
    let mut out = Vec::new();
    let ct_len_at = PREFIX_LEN + 1 + id_len + 24 + 2 * KEY_LEN + ENC_LEN;
    let ct_len = u32::from_be_bytes(bytes.get(ct_len_at..ct_len_at + 4)?.try_into().ok()?) as usize;
    for (name, len) in [
        ("magic", 4),
        ("format", 1),
        ("kem", 2),
        ("kdf", 2),
        ("aead", 2),
        ("id_len", 1),
        ("sandbox_id", id_len),
        ("version", 8),
        ("issued_at", 8),
        ("expires_at", 8),
        ("recipient", KEY_LEN),
        ("signer", KEY_LEN),
        ("enc", ENC_LEN),
        ("ct_len", 4),
        ("ciphertext", ct_len),
        ("signature", SIGNATURE_LEN),
    ] {
        out.push((name, at..at + len));
        at += len;
    }
    (at == bytes.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: &str) -> Header {
        Header {
            sandbox_id: id.into(),
            version: 7,
            issued_at: 1_000,
            expires_at: 2_000,
            recipient: [1; 32],
            signer: [2; 32],
        }
    }

    fn build(h: &Header, ct: &[u8]) -> Vec<u8> {
        let mut b = encode_body(encode_header(h), &[3; 32], ct).unwrap();
        b.extend_from_slice(&[4; 64]);
        b
    }

    #[test]
    fn encode_parse_round_trip() {
        for (id, ct_len) in [
            ("a", 16),
            ("sbx-01:eu.west_1", 100),
            (&*"x".repeat(128), 16),
        ] {
            let h = header(id);
            let ct = vec![9u8; ct_len];
            let bytes = build(&h, &ct);
            assert_eq!(bytes.len(), FIXED_OVERHEAD + id.len() + ct_len);
            let p = parse(&bytes).unwrap();
            assert_eq!(p.header, h);
            assert_eq!(p.ciphertext, &ct[..]);
            assert_eq!(p.enc, &[3; 32]);
            assert_eq!(p.signature, &[4; 64]);
            assert_eq!(p.header_bytes, &encode_header(&h)[..]);
            assert_eq!(p.signed.len(), bytes.len() - 64);
            assert!(regions(&bytes).is_some());
        }
    }

    #[test]
    fn fixed_offsets_match_the_spec() {
        // docs/bundle-format.md: for a sandbox id of length L, version at 12+L, enc at
        // 100+L, ciphertext length at 132+L, ciphertext at 136+L, total 200+L+N.
        let bytes = build(&header("abc"), &[0xAA; 20]);
        let l = 3;
        assert_eq!(&bytes[0..4], b"GXB1");
        assert_eq!(bytes[4], 1);
        assert_eq!(&bytes[5..11], &[0, 0x20, 0, 1, 0, 3]);
        assert_eq!(bytes[11], 3);
        assert_eq!(&bytes[12 + l..20 + l], &7u64.to_be_bytes());
        assert_eq!(&bytes[36 + l..68 + l], &[1; 32]);
        assert_eq!(&bytes[68 + l..100 + l], &[2; 32]);
        assert_eq!(&bytes[100 + l..132 + l], &[3; 32]);
        assert_eq!(&bytes[132 + l..136 + l], &20u32.to_be_bytes());
        assert_eq!(bytes.len(), 200 + l + 20);
    }

    #[test]
    fn parse_errors_table() {
        let good = build(&header("sbx"), &[5; 16]);
        let with = |at: usize, v: u8| {
            let mut b = good.clone();
            b[at] = v;
            b
        };
        let mut trailing = good.clone();
        trailing.push(0);
        let mut bad_id = good.clone();
        bad_id[12] = b'/';
        let mut late = header("sbx");
        late.issued_at = 3_000;
        let short_ct = {
            let mut b = encode_body(encode_header(&header("sbx")), &[3; 32], &[0; 15]).unwrap();
            b.extend_from_slice(&[4; 64]);
            b
        };
        type Case = (&'static str, Vec<u8>, fn(&BundleError) -> bool);
        let malformed: fn(&BundleError) -> bool = |e| matches!(e, BundleError::Malformed(_));
        let unsupported: fn(&BundleError) -> bool = |e| matches!(e, BundleError::Unsupported(_));
        let cases: Vec<Case> = vec![
            ("empty", vec![], malformed),
            ("short prefix", good[..7].to_vec(), malformed),
            ("bad magic", with(0, b'X'), unsupported),
            ("format 2", with(4, 2), unsupported),
            ("format 0", with(4, 0), unsupported),
            ("kem", with(6, 0x21), unsupported),
            ("kdf", with(8, 2), unsupported),
            ("aead", with(10, 1), unsupported),
            ("id len 0", with(11, 0), malformed),
            ("id len 129", with(11, 129), malformed),
            ("id len too long for data", with(11, 100), malformed),
            ("id char", bad_id, malformed),
            ("trailing", trailing, malformed),
            ("ct shorter than tag", short_ct, malformed),
            ("issued after expiry", build(&late, &[5; 16]), malformed),
            (
                "ct len huge",
                with(good.len() - 64 - 16 - 4, 0xFF),
                malformed,
            ),
        ];
        for (name, bytes, expect) in cases {
            match parse(&bytes) {
                Err(e) => assert!(expect(&e), "{name}: unexpected {e:?}"),
                Ok(_) => panic!("{name}: parsed"),
            }
        }
        // Truncation at every byte is malformed (or unsupported never: the prefix is intact
        // up to where it ends).
        for cut in 0..good.len() {
            assert!(
                matches!(parse(&good[..cut]), Err(BundleError::Malformed(_))),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn input_shorter_than_the_prefix_is_malformed_whatever_it_starts_with() {
        // Not our magic, and shorter than the 11-byte prefix: step 2 (prefix present)
        // fails before step 3 (magic) is judged.
        for input in [
            &b""[..],
            b"GX",
            b"hello\n",
            b"{\"a\":1}",
            b"XXXXXXXXXX",
            b"GXB1\x02\x00\x21",
        ] {
            assert!(input.len() < PREFIX_LEN);
            assert!(
                matches!(parse(input), Err(BundleError::Malformed(_))),
                "{input:?}: {:?}",
                parse(input).err()
            );
        }
        // From the prefix's length on, bad magic is judged as such.
        assert!(matches!(
            parse(b"XXXXXXXXXXX"),
            Err(BundleError::Unsupported(_))
        ));
    }

    #[test]
    fn sandbox_id_rules() {
        for (id, ok) in [
            ("a", true),
            ("A-z_0.9:x", true),
            ("", false),
            ("a b", false),
            ("a/b", false),
            ("é", false),
            (&*"a".repeat(128), true),
            (&*"a".repeat(129), false),
        ] {
            assert_eq!(valid_sandbox_id(id), ok, "{id:?}");
        }
    }
}
