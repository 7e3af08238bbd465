//! Unit tests of the RFB parser and filter: tables and properties.

use super::*;
use proptest::prelude::*;

const HANDSHAKE: &[u8] = b"RFB 003.008\n\x01\x01";

fn normal_parser() -> RfbParser {
    RfbParser {
        phase: Phase::Normal,
        limits: RfbLimits::default(),
    }
}

#[test]
fn normal_messages_table() {
    let qemu_key = [255u8, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 0x1e];
    let fence = [248u8, 0, 0, 0, 0x80, 0, 0, 2, 3, b'a', b'b', b'c'];
    let mut desktop = vec![251u8, 0, 5, 0, 3, 0, 1, 0];
    desktop.extend_from_slice(&[0; 16]);
    let mut ext_cut = vec![6u8, 0, 0, 0];
    ext_cut.extend_from_slice(&(-4i32).to_be_bytes());
    ext_cut.extend_from_slice(&[0x10, 0, 0, 1]);
    let cases: Vec<(Vec<u8>, Message)> = vec![
        (vec![0; 20], Message::SetPixelFormat),
        (
            encode::set_encodings(&[0, 7, -223]),
            Message::SetEncodings { count: 3 },
        ),
        (
            encode::framebuffer_update_request(true, 1280, 800),
            Message::FramebufferUpdateRequest {
                incremental: true,
                x: 0,
                y: 0,
                width: 1280,
                height: 800,
            },
        ),
        (
            encode::key_event(true, 0x61),
            Message::KeyEvent {
                down: true,
                keysym: 0x61,
            },
        ),
        (
            encode::pointer_event(1, 10, 20),
            Message::PointerEvent {
                buttons: 1,
                x: 10,
                y: 20,
            },
        ),
        (
            encode::client_cut_text(b"hello"),
            Message::ClientCutText {
                len: 5,
                extended: false,
            },
        ),
        (
            ext_cut,
            Message::ClientCutText {
                len: 4,
                extended: true,
            },
        ),
        (
            vec![150, 1, 0, 0, 0, 0, 5, 0, 3, 0],
            Message::EnableContinuousUpdates { enable: true },
        ),
        (
            fence.to_vec(),
            Message::Fence {
                flags: 0x8000_0002,
                len: 3,
            },
        ),
        (vec![250, 0, 1, 2], Message::Xvp { version: 1, op: 2 }),
        (desktop, Message::SetDesktopSize { screens: 1 }),
        (
            qemu_key.to_vec(),
            Message::QemuKeyEvent {
                down: true,
                keysym: 0x61,
                keycode: 0x1e,
            },
        ),
    ];
    for (bytes, want) in cases {
        let mut p = normal_parser();
        for cut in 0..bytes.len() {
            assert_eq!(
                p.next_message(&bytes[..cut]),
                Ok(None),
                "{want:?} cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[4, 1]);
        assert_eq!(
            p.next_message(&longer),
            Ok(Some((want, bytes.len()))),
            "{want:?}"
        );
    }
}

#[test]
fn errors_table() {
    let mut big_cut = vec![6u8, 0, 0, 0];
    big_cut.extend_from_slice(&((1u32 << 20) + 1).to_be_bytes());
    let mut big_neg_cut = vec![6u8, 0, 0, 0];
    big_neg_cut.extend_from_slice(&i32::MIN.to_be_bytes());
    let cases: Vec<(Vec<u8>, RfbError)> = vec![
        (vec![7], RfbError::UnknownMessage(7)),
        (vec![1, 0, 0], RfbError::UnknownMessage(1)),
        (vec![254], RfbError::UnknownMessage(254)),
        (vec![255, 1], RfbError::UnknownQemuMessage(1)),
        (
            big_cut,
            RfbError::CutTextTooLong {
                len: (1 << 20) + 1,
                limit: 1 << 20,
            },
        ),
        (
            big_neg_cut,
            RfbError::CutTextTooLong {
                len: 1 << 31,
                limit: 1 << 20,
            },
        ),
        (
            vec![2, 0, 0xff, 0xff],
            RfbError::TooManyEncodings {
                count: 0xffff,
                limit: 512,
            },
        ),
        (
            vec![248, 0, 0, 0, 0, 0, 0, 0, 65],
            RfbError::FenceTooLong(65),
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(
            normal_parser().next_message(&bytes),
            Err(want.clone()),
            "{want:?}"
        );
    }
}

#[test]
fn handshake_table() {
    type Case = (&'static [u8], Result<Vec<Phase>, RfbError>);
    let cases: Vec<Case> = vec![
        (
            b"RFB 003.008\n\x01\x01",
            Ok(vec![Phase::SecurityType, Phase::ClientInit, Phase::Normal]),
        ),
        (
            b"RFB 003.007\n\x01\x00",
            Ok(vec![Phase::SecurityType, Phase::ClientInit, Phase::Normal]),
        ),
        (
            b"RFB 003.008\n\x020123456789abcdef\x01",
            Ok(vec![
                Phase::SecurityType,
                Phase::VncAuthResponse,
                Phase::ClientInit,
                Phase::Normal,
            ]),
        ),
        (
            b"RFB 003.003\n",
            Err(RfbError::UnsupportedVersion { minor: 3 }),
        ),
        (
            b"RFB 004.000\n",
            Err(RfbError::UnsupportedVersion { minor: 0 }),
        ),
        (b"GET / HTTP/1", Err(RfbError::BadVersion)),
        (b"RFB 003.0x8\n", Err(RfbError::BadVersion)),
        (b"RFB 003.008\r", Err(RfbError::BadVersion)),
        (b"RFB 003.008\n\x10", Err(RfbError::UnsupportedSecurity(16))),
        (b"RFB 003.008\n\x13", Err(RfbError::UnsupportedSecurity(19))),
        (b"RFB 003.008\n\x00", Err(RfbError::UnsupportedSecurity(0))),
    ];
    for (bytes, want) in cases {
        let mut p = RfbParser::new(RfbLimits::default());
        let mut at = 0;
        let mut phases = Vec::new();
        let got = loop {
            match p.next_message(&bytes[at..]) {
                Ok(Some((_, len))) => {
                    at += len;
                    phases.push(p.phase());
                }
                Ok(None) => break Ok(phases),
                Err(e) => break Err(e),
            }
        };
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(bytes));
    }
}

#[test]
fn filter_view_only_drops_input_and_forces_shared() {
    let mut input = b"RFB 003.008\n\x01\x00".to_vec();
    let fbur = encode::framebuffer_update_request(false, 10, 10);
    input.extend_from_slice(&fbur);
    input.extend_from_slice(&encode::key_event(true, 0x61));
    input.extend_from_slice(&encode::pointer_event(1, 1, 1));
    input.extend_from_slice(&encode::client_cut_text(b"secret"));
    input.extend_from_slice(&[250, 0, 1, 2]);
    input.extend_from_slice(&fbur);
    let mut f = RfbFilter::new(Access::ViewOnly);
    let mut out = Vec::new();
    f.feed(&input, &mut out).unwrap();
    let mut want = b"RFB 003.008\n\x01\x01".to_vec();
    want.extend_from_slice(&fbur);
    want.extend_from_slice(&fbur);
    assert_eq!(out, want);
    assert_eq!(f.stats().dropped, 4);

    let mut control = RfbFilter::new(Access::Control);
    let mut out = Vec::new();
    control.feed(&input, &mut out).unwrap();
    // Only xvp is dropped, and ClientInit is forced shared.
    assert_eq!(out.len(), input.len() - 4);
    assert_eq!(out[13], 1);
}

#[test]
fn an_answered_filter_checks_the_answers_it_drops() {
    let fbur = encode::framebuffer_update_request(false, 10, 10);
    let key = encode::key_event(true, 0x61);
    let input = [HANDSHAKE, &fbur, &key].concat();
    for (access, want) in [
        (Access::Control, [fbur.as_slice(), &key].concat()),
        (Access::ViewOnly, fbur.clone()),
    ] {
        let mut f = RfbFilter::answered(access, RfbLimits::default());
        let mut out = Vec::new();
        f.feed(&input, &mut out).unwrap();
        assert_eq!(out, want, "{access:?}");
        assert_eq!(f.stats().messages, 5);
    }
    // The relay offered 3.8 and None only: any other answer closes the connection.
    let cases: [(&[u8], RfbError); 2] = [
        (
            b"RFB 003.007
",
            RfbError::UnsupportedVersion { minor: 7 },
        ),
        (
            b"RFB 003.008
",
            RfbError::UnsupportedSecurity(2),
        ),
    ];
    for (input, want) in cases {
        let mut f = RfbFilter::answered(Access::Control, RfbLimits::default());
        let mut out = Vec::new();
        assert_eq!(f.feed(input, &mut out), Err(want));
        assert!(out.is_empty());
    }
}

#[test]
fn filter_fails_for_good_after_an_error() {
    let mut f = RfbFilter::new(Access::Control);
    let mut out = Vec::new();
    let mut input = HANDSHAKE.to_vec();
    input.extend_from_slice(&encode::key_event(true, 1));
    input.push(9);
    assert_eq!(f.feed(&input, &mut out), Err(RfbError::UnknownMessage(9)));
    assert_eq!(out.len(), HANDSHAKE.len() + 8);
    assert_eq!(
        f.feed(&encode::key_event(true, 1), &mut out),
        Err(RfbError::Failed)
    );
}

fn arb_message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 19).prop_map(|b| [vec![0u8], b].concat()),
        prop::collection::vec(any::<i32>(), 0..40).prop_map(|e| encode::set_encodings(&e)),
        (any::<bool>(), any::<u16>(), any::<u16>())
            .prop_map(|(i, w, h)| encode::framebuffer_update_request(i, w, h)),
        (any::<bool>(), any::<u32>()).prop_map(|(d, k)| encode::key_event(d, k)),
        (any::<u8>(), any::<u16>(), any::<u16>())
            .prop_map(|(b, x, y)| encode::pointer_event(b, x, y)),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(|t| encode::client_cut_text(&t)),
        prop::collection::vec(any::<u8>(), 9).prop_map(|b| [vec![150u8], b].concat()),
        prop::collection::vec(any::<u8>(), 0..=64).prop_map(|p| {
            let mut v = vec![248u8, 0, 0, 0, 0, 0, 0, 1, p.len() as u8];
            v.extend_from_slice(&p);
            v
        }),
        (any::<u8>(), any::<u8>()).prop_map(|(a, b)| vec![250u8, 0, a, b]),
        (0u8..4).prop_map(|n| {
            let mut v = vec![251u8, 0, 1, 0, 1, 0, n, 0];
            v.resize(8 + 16 * n as usize, 7);
            v
        }),
        prop::collection::vec(any::<u8>(), 10).prop_map(|b| [vec![255u8, 0], b].concat()),
    ]
}

fn feed_all(access: Access, chunks: &[&[u8]]) -> Result<Vec<u8>, RfbError> {
    let mut f = RfbFilter::new(access);
    let mut out = Vec::new();
    for c in chunks {
        f.feed(c, &mut out)?;
    }
    Ok(out)
}

/// Walks a filter's output and returns the message types after the handshake.
fn types_of(out: &[u8]) -> Vec<u8> {
    let mut p = RfbParser::new(RfbLimits::default());
    let mut at = 0;
    let mut types = Vec::new();
    while let Ok(Some((_, len))) = p.next_message(&out[at..]) {
        if p.phase() == Phase::Normal && at >= HANDSHAKE.len() {
            types.push(out[at]);
        }
        at += len;
    }
    assert_eq!(at, out.len(), "output must be whole messages");
    types
}

proptest! {
    #[test]
    fn chunking_never_changes_output(
        msgs in prop::collection::vec(arb_message(), 0..30),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        view_only in any::<bool>(),
    ) {
        let access = if view_only { Access::ViewOnly } else { Access::Control };
        let stream = [HANDSHAKE.to_vec(), msgs.concat()].concat();
        let whole = feed_all(access, &[&stream]).unwrap();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&stream[last..p]);
            last = p;
        }
        chunks.push(&stream[last..]);
        prop_assert_eq!(&feed_all(access, &chunks).unwrap(), &whole);
        let types = types_of(&whole);
        prop_assert!(!types.contains(&250));
        if view_only {
            for t in [4u8, 5, 6, 255, 251] {
                prop_assert!(!types.contains(&t), "type {} leaked", t);
            }
        } else {
            prop_assert_eq!(types.len(), msgs.iter().filter(|m| m[0] != 250).count());
        }
    }

    #[test]
    fn an_answered_filter_forwards_what_follows_the_handshake_only(
        msgs in prop::collection::vec(arb_message(), 0..30),
        cut in any::<prop::sample::Index>(),
        view_only in any::<bool>(),
    ) {
        let access = if view_only { Access::ViewOnly } else { Access::Control };
        let stream = [HANDSHAKE.to_vec(), msgs.concat()].concat();
        let plain = feed_all(access, &[&stream]).unwrap();
        let at = cut.index(stream.len() + 1);
        let mut f = RfbFilter::answered(access, RfbLimits::default());
        let mut out = Vec::new();
        f.feed(&stream[..at], &mut out).unwrap();
        f.feed(&stream[at..], &mut out).unwrap();
        // The same messages as a plain filter forwards, without the handshake answers.
        prop_assert_eq!(&out[..], &plain[HANDSHAKE.len()..]);
        prop_assert_eq!(f.phase(), Phase::Normal);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        prefix in any::<bool>(),
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        split in any::<prop::sample::Index>(),
    ) {
        let stream = if prefix { [HANDSHAKE.to_vec(), bytes].concat() } else { bytes };
        let at = split.index(stream.len() + 1);
        let mut f = RfbFilter::new(Access::ViewOnly);
        let mut out = Vec::new();
        if f.feed(&stream[..at], &mut out).is_ok() {
            let _ = f.feed(&stream[at..], &mut out);
        }
        prop_assert!(f.pending_len() <= RfbLimits::default().max_buffered_len());
        prop_assert!(out.len() <= stream.len());
    }
}

#[test]
fn a_clipboard_streams_through_without_being_held() {
    // 1 MiB of clipboard in noVNC's 10 KiB frames: nothing of it is ever held back, and a
    // message after it is parsed as usual.
    let text = vec![b'c'; 1 << 20];
    let stream = [
        HANDSHAKE.to_vec(),
        encode::client_cut_text(&text),
        encode::framebuffer_update_request(true, 8, 8),
    ]
    .concat();
    for access in [Access::Control, Access::ViewOnly] {
        let mut f = RfbFilter::new(access);
        let mut out = Vec::new();
        for chunk in stream.chunks(10 * 1024) {
            f.feed(chunk, &mut out).unwrap();
            assert!(f.pending_len() < 64, "{access:?}: {} held", f.pending_len());
        }
        let expected = match access {
            Access::Control => stream.clone(),
            Access::ViewOnly => [
                HANDSHAKE.to_vec(),
                encode::framebuffer_update_request(true, 8, 8),
            ]
            .concat(),
        };
        assert!(out == expected, "{access:?}: other bytes out");
        assert_eq!(f.stats().messages, 5);
        assert_eq!(f.stats().dropped, u64::from(access == Access::ViewOnly));
    }
}
