use proptest::prelude::*;

use crate::GrantId;
use crate::access::{Access, Mode};

use super::*;

/// Hex with spaces allowed, for byte layouts written the way docs/wire-protocol.md lays them out.
fn bytes(spaced_hex: &str) -> Vec<u8> {
    hex::decode(spaced_hex.replace([' ', '\n', '|'], "")).unwrap()
}

fn encode(f: &Frame) -> Vec<u8> {
    f.to_vec().unwrap()
}

fn decode_one(buf: &[u8]) -> Frame {
    let (frame, used) = decode(buf).unwrap().expect("a whole frame");
    assert_eq!(used, buf.len(), "consumed the whole frame");
    frame
}

fn golden(frame: Frame, layout: &str) {
    let expected = bytes(layout);
    assert_eq!(
        hex::encode(encode(&frame)),
        hex::encode(&expected),
        "{frame:?}"
    );
    assert_eq!(decode_one(&expected), frame);
}

// Each layout pins the byte tables in docs/wire-protocol.md: length | kind | body.

#[test]
fn hello_layout() {
    golden(
        Frame::Hello {
            version: 1,
            token: Token::new("ab"),
        },
        "00000007 | 01 | 0001 | 0002 6162",
    );
}

#[test]
fn welcome_layout() {
    golden(
        Frame::Welcome {
            session_id: "s".into(),
            grant_id: GrantId::new(7),
            targets: vec![WireTarget {
                device: "d".into(),
                port: 502,
            }],
            window_end_unix_ms: 0x0102_0304_0506_0708,
            remaining_ms: 300_000,
        },
        "0000001e | 02 | 0001 73 | 0001 37 | 0001 | 0001 64 01f6 | 0102030405060708 | 00000000000493e0",
    );
}

#[test]
fn welcome_with_no_targets_and_negative_end() {
    golden(
        Frame::Welcome {
            session_id: String::new(),
            grant_id: GrantId::new(1),
            targets: vec![],
            window_end_unix_ms: -1,
            remaining_ms: 0,
        },
        "00000018 | 02 | 0000 | 0001 31 | 0000 | ffffffffffffffff | 0000000000000000",
    );
}

#[test]
fn refused_layout() {
    golden(
        Frame::Refused {
            code: RefusalCode::TargetNotGranted,
            message: "no".into(),
        },
        "00000006 | 03 | 07 | 0002 6e6f",
    );
}

#[test]
fn warning_layout() {
    golden(
        Frame::Warning {
            remaining_ms: 60_000,
        },
        "00000009 | 04 | 000000000000ea60",
    );
}

#[test]
fn ending_layout() {
    golden(
        Frame::Ending {
            reason: EndReason::Revoked,
            message: String::new(),
        },
        "00000004 | 05 | 02 | 0000",
    );
}

#[test]
fn open_layout() {
    golden(
        Frame::Open {
            device: "plc".into(),
            port: 502,
        },
        "00000008 | 10 | 0003 706c63 | 01f6",
    );
}

#[test]
fn opened_layout() {
    golden(Frame::Opened, "00000001 | 11");
}

#[test]
fn dial_layout() {
    golden(
        Frame::Dial {
            session_id: "s".into(),
            device: "d".into(),
            host: "h".into(),
            port: 502,
            mode: Mode::Raw,
        },
        "0000000c | 20 | 0001 73 | 0001 64 | 0001 68 | 01f6",
    );
    // A decoded port's dial carries its mode in a trailing byte, under its own kind.
    golden(
        Frame::Dial {
            session_id: "s".into(),
            device: "d".into(),
            host: "h".into(),
            port: 502,
            mode: Mode::Modbus(Access::Read),
        },
        "0000000d | 22 | 0001 73 | 0001 64 | 0001 68 | 01f6 | 01",
    );
}

#[test]
fn a_dial_mode_this_version_does_not_know_is_malformed() {
    for mode in ["00", "03", "ff"] {
        let bytes = bytes(&format!("0000000d 22 0001 73 0001 64 0001 68 01f6 {mode}"));
        assert!(
            matches!(
                decode(&bytes),
                Err(WireError::BadValue { field: "mode", .. })
            ),
            "mode {mode}"
        );
    }
}

#[test]
fn connector_hello_layout() {
    golden(
        Frame::ConnectorHello {
            version: 1,
            site: "x".into(),
        },
        "00000006 | 21 | 0001 | 0001 78",
    );
}

#[test]
fn ping_pong_layout() {
    golden(Frame::Ping { nonce: 1 }, "00000009 | 30 | 0000000000000001");
    golden(
        Frame::Pong { nonce: u64::MAX },
        "00000009 | 31 | ffffffffffffffff",
    );
}

#[test]
fn strings_are_utf8_counted_in_bytes() {
    golden(
        Frame::Open {
            device: "é".into(),
            port: 1,
        },
        "00000007 | 10 | 0002 c3a9 | 0001",
    );
}

#[test]
fn frame_names_match_kinds() {
    for f in sample_frames() {
        let buf = encode(&f);
        assert_eq!(frame::kind_name(buf[HEADER_LEN]), Some(f.name()));
    }
}

fn sample_frames() -> Vec<Frame> {
    vec![
        Frame::Hello {
            version: VERSION,
            token: Token::new("eyJ.x.y"),
        },
        Frame::Welcome {
            session_id: "sess-1".into(),
            grant_id: GrantId::new(9),
            targets: vec![
                WireTarget {
                    device: "plc-7".into(),
                    port: 502,
                },
                WireTarget {
                    device: "plc-7".into(),
                    port: 80,
                },
            ],
            window_end_unix_ms: 1_800_000_000_000,
            remaining_ms: 3_600_000,
        },
        Frame::Refused {
            code: RefusalCode::BadToken,
            message: "token signature is invalid".into(),
        },
        Frame::Warning {
            remaining_ms: 300_000,
        },
        Frame::Ending {
            reason: EndReason::WindowEnd,
            message: "the window ended at 17:00 UTC".into(),
        },
        Frame::Open {
            device: "plc-7".into(),
            port: 502,
        },
        Frame::Opened,
        Frame::Dial {
            session_id: "sess-1".into(),
            device: "plc-7".into(),
            host: "10.0.7.7".into(),
            port: 502,
            mode: Mode::Modbus(Access::Write),
        },
        Frame::ConnectorHello {
            version: VERSION,
            site: "plant-north".into(),
        },
        Frame::Ping { nonce: 42 },
        Frame::Pong { nonce: 42 },
    ]
}

// ---- incremental decoding ----

#[test]
fn short_buffers_ask_for_more() {
    assert_eq!(decode(&[]), Ok(None));
    assert_eq!(decode(&[0, 0, 0]), Ok(None));
    assert_eq!(decode(&[0, 0, 0, 9]), Ok(None));
    assert_eq!(decode(&[0, 0, 0, 9, 0x30, 0, 0]), Ok(None));
}

#[test]
fn decode_reports_bytes_consumed_and_leaves_the_rest() {
    let mut buf = encode(&Frame::Opened);
    buf.extend_from_slice(b"raw device bytes");
    assert_eq!(decode(&buf), Ok(Some((Frame::Opened, 5))));
}

#[test]
fn encode_appends_and_frames_decode_in_sequence() {
    let frames = sample_frames();
    let mut buf = b"already here".to_vec();
    for f in &frames {
        f.encode(&mut buf).unwrap();
    }
    let mut at = b"already here".len();
    for f in &frames {
        let (got, used) = decode(&buf[at..]).unwrap().unwrap();
        assert_eq!(&got, f);
        at += used;
    }
    assert_eq!(at, buf.len());
}

#[test]
fn frame_decoder_byte_by_byte() {
    let mut stream = Vec::new();
    for f in sample_frames() {
        f.encode(&mut stream).unwrap();
    }
    let mut d = FrameDecoder::new();
    let mut got = Vec::new();
    for b in &stream {
        d.push(std::slice::from_ref(b));
        while let Some(f) = d.next_frame().unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, sample_frames());
    assert!(d.buffered().is_empty());
}

#[test]
fn frame_decoder_hands_back_raw_bytes_after_opened() {
    // The device's first bytes can arrive in the same read as `Opened`: they must survive.
    let mut d = FrameDecoder::new();
    let mut chunk = encode(&Frame::Opened);
    chunk.extend_from_slice(b"\x00\x01raw modbus reply");
    d.push(&chunk);
    assert_eq!(d.next_frame(), Ok(Some(Frame::Opened)));
    assert_eq!(d.buffered(), b"\x00\x01raw modbus reply");
    assert_eq!(d.into_remainder(), b"\x00\x01raw modbus reply");
}

#[test]
fn frame_decoder_fails_on_a_bad_length_without_buffering_a_body() {
    let mut d = FrameDecoder::new();
    d.push(&[0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(
        d.next_frame(),
        Err(WireError::FrameTooLarge { .. })
    ));
}

#[test]
fn frame_len_checks_the_prefix() {
    assert_eq!(frame_len([0, 0, 0, 1]), Ok(1));
    assert_eq!(frame_len([0, 1, 0, 0]), Ok(MAX_FRAME_LEN));
    assert_eq!(
        frame_len([0, 1, 0, 1]),
        Err(WireError::FrameTooLarge {
            len: MAX_FRAME_LEN + 1,
            max: MAX_FRAME_LEN
        })
    );
    assert_eq!(frame_len([0, 0, 0, 0]), Err(WireError::EmptyFrame));
}

// ---- malformed input ----

#[test]
fn over_long_length_fails_before_the_body_arrives() {
    assert_eq!(
        decode(&[0xff, 0xff, 0xff, 0xff]),
        Err(WireError::FrameTooLarge {
            len: 0xffff_ffff,
            max: MAX_FRAME_LEN
        })
    );
    assert!(matches!(
        decode(&[0, 1, 0, 1, 0x01]),
        Err(WireError::FrameTooLarge { .. })
    ));
}

#[test]
fn zero_length_is_an_error() {
    assert_eq!(decode(&[0, 0, 0, 0]), Err(WireError::EmptyFrame));
    assert_eq!(decode(&[0, 0, 0, 0, 0x11]), Err(WireError::EmptyFrame));
}

#[test]
fn unknown_kinds_fail_as_soon_as_the_kind_byte_arrives() {
    for k in [0x00, 0x06, 0x0f, 0x12, 0x23, 0x32, 0x7f, 0xff] {
        assert_eq!(
            decode(&[0, 0, 0, 9, k]),
            Err(WireError::UnknownKind(k)),
            "{k:#x}"
        );
    }
}

#[test]
fn truncated_fields_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("00000002 | 01 | 00", "Hello", "version"),
        ("00000003 | 01 | 0001", "Hello", "token"),
        ("00000005 | 01 | 0001 | 0001", "Hello", "token"),
        ("00000006 | 01 | 0001 | 0005 61", "Hello", "token"),
        ("00000001 | 03", "Refused", "code"),
        ("00000002 | 03 | 01", "Refused", "message"),
        ("00000005 | 04 | 00000000", "Warning", "remaining_ms"),
        ("00000002 | 05 | 01", "Ending", "message"),
        ("00000004 | 10 | 0000 | 01", "Open", "port"),
        ("00000006 | 20 | 0000 | 0000 | 00", "Dial", "host"),
        ("00000002 | 21 | 00", "ConnectorHello", "version"),
        ("00000001 | 30", "Ping", "nonce"),
        ("00000008 | 31 | 00000000000000", "Pong", "nonce"),
        ("00000005 | 02 | 0000 | 0000", "Welcome", "targets"),
        (
            "0000000b | 02 | 0000 | 0000 | 0001 | 0002 6162",
            "Welcome",
            "targets.port",
        ),
        (
            "0000000b | 02 | 0000 | 0000 | 0001 | 0005 6162",
            "Welcome",
            "targets.device",
        ),
        (
            "0000000f | 02 | 0000 | 0000 | 0000 | 0000000000000000",
            "Welcome",
            "remaining_ms",
        ),
    ];
    for (layout, frame, field) in cases {
        assert_eq!(
            decode(&bytes(layout)),
            Err(WireError::Truncated { frame, field }),
            "{layout}"
        );
    }
}

#[test]
fn a_list_count_larger_than_the_body_fails_without_allocating() {
    // 65535 targets promised in a 7-byte body: refused by arithmetic, not by running out.
    assert_eq!(
        decode(&bytes("00000009 | 02 | 0000 | 0000 | ffff | 0000")),
        Err(WireError::Truncated {
            frame: "Welcome",
            field: "targets"
        })
    );
}

#[test]
fn invalid_utf8_is_an_error() {
    assert_eq!(
        decode(&bytes("00000007 | 10 | 0002 c328 | 01f6")),
        Err(WireError::InvalidUtf8 {
            frame: "Open",
            field: "device"
        })
    );
    assert_eq!(
        decode(&bytes("00000006 | 03 | 01 | 0002 ff61")),
        Err(WireError::InvalidUtf8 {
            frame: "Refused",
            field: "message"
        })
    );
}

#[test]
fn trailing_bytes_in_a_body_are_an_error() {
    assert_eq!(
        decode(&bytes("00000002 | 11 | 00")),
        Err(WireError::TrailingBytes {
            frame: "Opened",
            count: 1
        })
    );
    assert_eq!(
        decode(&bytes("0000000b | 30 | 0000000000000001 | 0000")),
        Err(WireError::TrailingBytes {
            frame: "Ping",
            count: 2
        })
    );
}

// ---- encoding limits ----

#[test]
fn the_largest_frame_fits_and_one_more_byte_does_not() {
    // kind (1) + version (2) + token length (2) + token = MAX_FRAME_LEN.
    let fits = Frame::Hello {
        version: 1,
        token: Token::new("t".repeat(MAX_FRAME_LEN - 5)),
    };
    let buf = encode(&fits);
    assert_eq!(buf.len(), HEADER_LEN + MAX_FRAME_LEN);
    assert_eq!(decode_one(&buf), fits);

    let over = Frame::Refused {
        code: RefusalCode::Internal,
        message: "m".repeat(u16::MAX as usize),
    };
    let mut out = b"keep".to_vec();
    assert_eq!(
        over.encode(&mut out),
        Err(WireError::FrameTooLarge {
            len: MAX_FRAME_LEN + 3,
            max: MAX_FRAME_LEN
        })
    );
    assert_eq!(out, b"keep", "a failed encode leaves the buffer as it was");
}

#[test]
fn over_long_strings_and_lists_are_encode_errors() {
    let mut out = b"keep".to_vec();
    let long = Frame::Open {
        device: "d".repeat(70_000),
        port: 1,
    };
    assert_eq!(
        long.encode(&mut out),
        Err(WireError::StringTooLong {
            frame: "Open",
            field: "device",
            len: 70_000
        })
    );
    let many = Frame::Welcome {
        session_id: String::new(),
        grant_id: GrantId::new(1),
        targets: vec![
            WireTarget {
                device: String::new(),
                port: 1
            };
            70_000
        ],
        window_end_unix_ms: 0,
        remaining_ms: 0,
    };
    assert_eq!(
        many.encode(&mut out),
        Err(WireError::TooManyItems {
            frame: "Welcome",
            field: "targets",
            count: 70_000
        })
    );
    assert_eq!(out, b"keep");
}

#[test]
fn a_welcome_whose_grant_is_not_a_number_is_refused() {
    // A version-1 Welcome from a relay that wrote "g" as the grant.
    let old =
        bytes("0000001e 02 0001 73 0001 67 0001 0001 64 01f6 0102030405060708 00000000000493e0");
    assert_eq!(
        decode(&old),
        Err(WireError::BadValue {
            frame: "Welcome",
            field: "grant_id",
            reason: "is not a grant number"
        })
    );
}

// ---- codes ----

#[test]
fn code_names_are_stable() {
    // These names are in audit logs already written: never rename one.
    let refusals: Vec<_> = RefusalCode::ALL
        .iter()
        .map(|c| (c.code(), c.as_str()))
        .collect();
    assert_eq!(
        refusals,
        [
            (1, "bad_version"),
            (2, "bad_token"),
            (3, "token_expired"),
            (4, "binding_mismatch"),
            (5, "grant_inactive"),
            (6, "not_in_window"),
            (7, "target_not_granted"),
            (8, "connection_limit"),
            (9, "audit_unavailable"),
            (10, "dial_failed"),
            (11, "dial_timeout"),
            (12, "connector_offline"),
            (13, "connector_refused"),
            (14, "internal"),
            (15, "clock_anomaly"),
            (16, "session_revoked"),
        ]
    );
    let reasons: Vec<_> = EndReason::ALL
        .iter()
        .map(|r| (r.code(), r.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (1, "window_end"),
            (2, "revoked"),
            (3, "user_disabled"),
            (4, "policy_changed"),
            (5, "idle_timeout"),
            (6, "shutdown"),
            (7, "relay_restart"),
            (8, "audit_unavailable"),
            (9, "client_closed"),
            (10, "device_closed"),
            (11, "connector_lost"),
            (12, "session_revoked"),
            (13, "ended_by_supervisor"),
        ]
    );
}

#[test]
fn codes_round_trip_through_numbers_names_and_display() {
    for &c in RefusalCode::ALL {
        assert_eq!(RefusalCode::from_code(c.code()), c);
        assert_eq!(c.as_str().parse::<RefusalCode>().unwrap(), c);
        assert_eq!(c.to_string(), c.as_str());
    }
    for &r in EndReason::ALL {
        assert_eq!(EndReason::from_code(r.code()), r);
        assert_eq!(r.as_str().parse::<EndReason>().unwrap(), r);
        assert_eq!(r.to_string(), r.as_str());
    }
    assert!("revoked ".parse::<EndReason>().is_ok());
    assert!("unknown".parse::<EndReason>().is_err());
    assert!("Revoked".parse::<EndReason>().is_err());
}

#[test]
fn unknown_codes_decode_and_keep_their_number() {
    // A newer relay's refusal still reaches an older client with its message.
    let buf = bytes("00000006 | 03 | c8 | 0002 6869");
    assert_eq!(
        decode_one(&buf),
        Frame::Refused {
            code: RefusalCode::Unknown(200),
            message: "hi".into()
        }
    );
    assert_eq!(encode(&decode_one(&buf)), buf);
    assert_eq!(RefusalCode::from_code(0), RefusalCode::Unknown(0));
    assert_eq!(RefusalCode::Unknown(200).as_str(), "unknown");
    assert_eq!(
        RefusalCode::Unknown(200).to_string(),
        "unknown refusal code 200"
    );
    assert_eq!(
        decode_one(&bytes("00000004 | 05 | 63 | 0000")),
        Frame::Ending {
            reason: EndReason::Unknown(99),
            message: String::new()
        }
    );
}

#[test]
fn token_debug_is_redacted() {
    let f = Frame::Hello {
        version: 1,
        token: Token::new("eyJhbGciOiJFZERTQSJ9.secret.sig"),
    };
    let shown = format!("{f:?}");
    assert!(!shown.contains("secret"), "{shown}");
    assert!(shown.contains("31 bytes"), "{shown}");
}

#[test]
fn errors_read_as_sentences() {
    assert_eq!(
        WireError::UnknownKind(0x7f).to_string(),
        "unknown frame kind 0x7f; the peer may speak another protocol version"
    );
    assert_eq!(
        WireError::Truncated {
            frame: "Open",
            field: "port"
        }
        .to_string(),
        "Open frame is cut short: it ends inside field `port`"
    );
}

// ---- properties ----

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9.-]{0,16}",
        4 => ".{0,24}",
        1 => "[A-Za-z0-9._-]{0,3000}",
    ]
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let target = (text(), any::<u16>()).prop_map(|(device, port)| WireTarget { device, port });
    prop_oneof![
        (any::<u16>(), text()).prop_map(|(version, t)| Frame::Hello {
            version,
            token: Token::new(t)
        }),
        (
            text(),
            (1..=i64::MAX).prop_map(GrantId::new),
            proptest::collection::vec(target, 0..20),
            any::<i64>(),
            any::<u64>()
        )
            .prop_map(|(session_id, grant_id, targets, end, remaining_ms)| {
                Frame::Welcome {
                    session_id,
                    grant_id,
                    targets,
                    window_end_unix_ms: end,
                    remaining_ms,
                }
            }),
        (any::<u8>(), text()).prop_map(|(c, message)| Frame::Refused {
            code: RefusalCode::from_code(c),
            message
        }),
        any::<u64>().prop_map(|remaining_ms| Frame::Warning { remaining_ms }),
        (any::<u8>(), text()).prop_map(|(r, message)| Frame::Ending {
            reason: EndReason::from_code(r),
            message
        }),
        (text(), any::<u16>()).prop_map(|(device, port)| Frame::Open { device, port }),
        Just(Frame::Opened),
        (text(), text(), text(), any::<u16>(), 0u8..3).prop_map(
            |(session_id, device, host, port, mode)| Frame::Dial {
                session_id,
                device,
                host,
                port,
                mode: Mode::from_code(mode).unwrap_or_default(),
            }
        ),
        (any::<u16>(), text()).prop_map(|(version, site)| Frame::ConnectorHello { version, site }),
        any::<u64>().prop_map(|nonce| Frame::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Frame::Pong { nonce }),
    ]
}

/// A correctly framed body of random bytes behind a known kind: reaches the field parsers far more
/// often than fully random bytes do.
fn framed_noise() -> impl Strategy<Value = Vec<u8>> {
    let kinds = prop::sample::select(vec![
        0x01u8, 0x02, 0x03, 0x04, 0x05, 0x10, 0x11, 0x20, 0x21, 0x30, 0x31,
    ]);
    (kinds, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(kind, body)| {
        let mut buf = u32::try_from(body.len() + 1)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        buf.push(kind);
        buf.extend_from_slice(&body);
        buf
    })
}

/// Whatever decodes re-encodes to exactly the bytes it came from (the encoding is canonical).
fn check_arbitrary(buf: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(Some((frame, used))) = decode(buf) {
        prop_assert!(used <= buf.len());
        prop_assert_eq!(&encode(&frame)[..], &buf[..used]);
    }
    Ok(())
}

proptest! {
    #[test]
    fn round_trip(frame in arb_frame(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        let mut buf = encode(&frame);
        let len = buf.len();
        prop_assert_eq!(decode(&buf), Ok(Some((frame.clone(), len))));
        // Whatever follows the frame on the stream is not touched.
        buf.extend_from_slice(&tail);
        prop_assert_eq!(decode(&buf), Ok(Some((frame, len))));
    }

    #[test]
    fn every_prefix_asks_for_more(frame in arb_frame()) {
        let buf = encode(&frame);
        for cut in 0..buf.len() {
            prop_assert_eq!(decode(&buf[..cut]), Ok(None), "prefix of {} bytes", cut);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_arbitrary(&buf)?;
    }

    #[test]
    fn framed_noise_never_panics(buf in framed_noise()) {
        check_arbitrary(&buf)?;
    }

    #[test]
    fn frame_decoder_handles_any_chunking(
        frames in proptest::collection::vec(arb_frame(), 0..6),
        chunk in 1usize..50,
    ) {
        let mut stream = Vec::new();
        for f in &frames {
            f.encode(&mut stream).unwrap();
        }
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            d.push(piece);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert!(d.buffered().is_empty());
    }
}
