//! The AWS event-stream codec: AWS's shared test vectors (valid and invalid
//! frames), real Bedrock frames decoded byte for byte, the streaming decoder
//! over any chunking, and properties: encode → decode round trips, and every
//! corrupted byte is detected. Fixtures: `fixtures/bedrock/README.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use tollgate_core::eventstream::{Decoder, Error, Header, HeaderValue, Message, DEFAULT_MAX_MESSAGE_BYTES};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/bedrock/eventstream/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Decode `bytes` fed in chunks of `size`, then finish.
fn decode_chunked(bytes: &[u8], size: usize) -> Result<Vec<Message>, Error> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for chunk in bytes.chunks(size.max(1)) {
        d.feed(chunk, &mut out)?;
    }
    d.finish()?;
    Ok(out)
}

fn all_headers_message() -> Message {
    Message::new(
        vec![
            Header::new("true", HeaderValue::Bool(true)),
            Header::new("false", HeaderValue::Bool(false)),
            Header::new("byte", HeaderValue::Byte(50)),
            Header::new("short", HeaderValue::Int16(20_000)),
            Header::new("int", HeaderValue::Int32(500_000)),
            Header::new("long", HeaderValue::Int64(50_000_000_000)),
            Header::new("bytes", HeaderValue::Bytes(b"some bytes".to_vec())),
            Header::string("str", "some str"),
            Header::new("time", HeaderValue::Timestamp(5_000_000_000)),
            Header::new(
                "uuid",
                HeaderValue::Uuid([
                    0xb7, 0x9b, 0xc9, 0x14, 0xde, 0x21, 0x4e, 0x13, 0xb8, 0xb2, 0xbc, 0x47, 0xe8, 0x5b, 0x7f, 0x0b,
                ]),
            ),
        ],
        b"some payload".to_vec(),
    )
}

#[test]
fn aws_valid_vectors_decode_and_encode_back_byte_for_byte() {
    let cases = [
        ("valid_with_all_headers_and_payload", all_headers_message()),
        ("valid_empty_payload", Message::new(vec![Header::new("some-header", HeaderValue::Int16(500))], Vec::new())),
        ("valid_no_headers", Message::new(Vec::new(), b"another test payload".to_vec())),
    ];
    for (name, expected) in cases {
        let bytes = fixture(name);
        let decoded = Message::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded, expected, "{name}");
        assert_eq!(decoded.encode().unwrap(), bytes, "{name}: re-encoded");
        for size in [1, 3, 7, 16, bytes.len()] {
            assert_eq!(decode_chunked(&bytes, size).unwrap(), vec![expected.clone()], "{name} in chunks of {size}");
        }
    }
}

#[test]
fn aws_invalid_vectors_are_refused_with_the_right_error() {
    type Check = fn(&Error) -> bool;
    let cases: [(&str, Check); 8] = [
        ("invalid_prelude_checksum", |e| matches!(e, Error::PreludeChecksum { expected: 0xdead_beef, .. })),
        ("invalid_message_checksum", |e| matches!(e, Error::MessageChecksum { expected: 0xdead_beef, .. })),
        ("invalid_header_value_type", |e| matches!(e, Error::MessageChecksum { .. })),
        ("invalid_header_name_length", |e| matches!(e, Error::MessageChecksum { .. })),
        ("invalid_header_string_value_length", |e| matches!(e, Error::MessageChecksum { .. })),
        ("invalid_header_name_length_too_long", |e| matches!(e, Error::MessageChecksum { .. })),
        // 77 bytes of headers cannot fit in an 89-byte message.
        ("invalid_headers_length", |e| matches!(e, Error::InvalidPrelude { total: 89, headers: 77 })),
        // 93 bytes said, 93 given: the string header's length runs off the end.
        ("invalid_header_string_length_cut_off", |e| matches!(e, Error::MessageChecksum { .. })),
    ];
    for (name, check) in cases {
        let bytes = fixture(name);
        let err = Message::decode(&bytes).unwrap_err();
        assert!(check(&err), "{name}: {err:?}");
        for size in [1, 5, bytes.len()] {
            let err = decode_chunked(&bytes, size).unwrap_err();
            assert!(check(&err), "{name} in chunks of {size}: {err:?}");
        }
    }
}

#[test]
fn header_errors_behind_a_good_checksum_are_named() {
    // The invalid vectors' header damage with the CRCs recomputed: the
    // header parser itself must catch each.
    let recrc = |mut bytes: Vec<u8>| {
        let n = bytes.len();
        let crc = crc(&bytes[..n - 4]);
        bytes[n - 4..].copy_from_slice(&crc.to_be_bytes());
        bytes
    };
    for name in ["invalid_header_value_type", "invalid_header_name_length", "invalid_header_string_value_length"] {
        let err = Message::decode(&recrc(fixture(name))).unwrap_err();
        assert!(matches!(err, Error::InvalidHeader(_)), "{name}: {err:?}");
    }
    // A string header that is not UTF-8.
    let mut bytes = Message::new(vec![Header::string("k", "ab")], Vec::new()).encode().unwrap();
    bytes[12 + 1 + 1 + 1 + 2] = 0xff;
    let err = Message::decode(&recrc(bytes)).unwrap_err();
    assert!(matches!(&err, Error::InvalidHeader(m) if m.contains("UTF-8")), "{err:?}");
}

/// CRC32 (IEEE), bitwise, as a reference independent of the crate's.
fn crc(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for b in bytes {
        c ^= u32::from(*b);
        for _ in 0..8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 };
        }
    }
    !c
}

#[test]
fn a_real_converse_stream_frame_decodes_byte_for_byte() {
    let bytes = fixture("converse_stream_message_start.bin");
    assert_eq!(bytes.len(), 149);
    let m = Message::decode(&bytes).unwrap();
    assert_eq!(
        m.headers,
        vec![
            Header::string(":event-type", "messageStart"),
            Header::string(":content-type", "application/json"),
            Header::string(":message-type", "event"),
        ]
    );
    assert_eq!(m.event_type(), Some("messageStart"));
    assert_eq!(m.message_type(), Some("event"));
    assert_eq!(m.payload, br#"{"p":"abcdefghijklmnopqrstuvwx","role":"assistant"}"#);
    // The same message built from its parts is the same bytes, CRCs included.
    let built = Message::event("messageStart", "application/json", m.payload.clone());
    assert_eq!(built.encode().unwrap(), bytes);
    assert_eq!(&bytes[8..12], &[0xf9, 0xa1, 0x47, 0xd1]);
    assert_eq!(&bytes[145..], &[0xfb, 0xd5, 0xa5, 0xb0]);
}

#[test]
fn a_real_invoke_model_stream_chunk_decodes_byte_for_byte() {
    let bytes = fixture("invoke_stream_chunk.bin");
    let m = Message::decode(&bytes).unwrap();
    assert_eq!(m.event_type(), Some("chunk"));
    assert_eq!(m.header_str(":content-type"), Some("application/json"));
    let payload: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert!(payload["bytes"].as_str().unwrap().starts_with("eyJjaG9pY2VzIjpb"));
    assert_eq!(m.encode().unwrap(), bytes);
    // Ten of them back to back, fed in odd chunks, as the SDK test streams them.
    let stream: Vec<u8> = std::iter::repeat_n(bytes.as_slice(), 10).flatten().copied().collect();
    for size in [1, 13, 100, 267, 1000] {
        assert_eq!(decode_chunked(&stream, size).unwrap(), vec![m.clone(); 10], "chunks of {size}");
    }
}

#[test]
fn a_truncated_stream_is_an_error_at_finish() {
    let bytes = fixture("converse_stream_message_start.bin");
    for cut in [1, 11, 12, 50, 148] {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.feed(&bytes[..cut], &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(d.buffered(), cut);
        assert_eq!(d.finish(), Err(Error::Truncated { buffered: cut }), "cut at {cut}");
    }
    let mut d = Decoder::new();
    d.feed(&bytes, &mut Vec::new()).unwrap();
    assert_eq!(d.finish(), Ok(()));
}

#[test]
fn the_bound_is_enforced_from_the_prelude_and_a_failed_decoder_stays_failed() {
    let big = Message::event("chunk", "application/json", vec![b'x'; 1000]).encode().unwrap();
    let mut d = Decoder::with_max_message_bytes(500);
    let mut out = Vec::new();
    // The first 12 bytes are enough to refuse it: nothing more is buffered.
    let err = d.feed(&big[..12], &mut out).unwrap_err();
    assert_eq!(err, Error::MessageTooLarge { length: big.len(), limit: 500 });
    assert_eq!(d.buffered(), 0);
    assert_eq!(d.feed(&big[12..], &mut out), Err(err.clone()));
    assert_eq!(d.finish(), Err(err));
    assert_eq!(Decoder::default().feed(&big, &mut out), Ok(()));
    assert_eq!(out.len(), 1);
    assert_eq!(DEFAULT_MAX_MESSAGE_BYTES, 16 * 1024 * 1024);
}

#[test]
fn messages_before_a_bad_one_are_still_handed_out() {
    let good = Message::event("contentBlockDelta", "application/json", b"{}".to_vec()).encode().unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 6] ^= 0x01;
    let stream = [good.clone(), good.clone(), bad].concat();
    let mut d = Decoder::new();
    let mut out = Vec::new();
    let err = d.feed(&stream, &mut out).unwrap_err();
    assert!(matches!(err, Error::MessageChecksum { .. }), "{err:?}");
    assert_eq!(out.len(), 2);
    assert_eq!(err.status(), 502);
    assert_eq!(err.code(), "upstream_invalid_stream");
}

#[test]
fn lengths_the_prelude_cannot_mean_are_refused() {
    // Total length under 16, and a headers length past the message.
    for (total, headers) in [(0u32, 0u32), (15, 0), (16, 1), (20, 5)] {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&total.to_be_bytes());
        bytes.extend_from_slice(&headers.to_be_bytes());
        bytes.extend_from_slice(&crc(&bytes).to_be_bytes());
        bytes.resize(20, 0);
        let err = decode_chunked(&bytes, 4).unwrap_err();
        assert_eq!(err, Error::InvalidPrelude { total, headers }, "{total}/{headers}");
    }
}

#[test]
fn the_encoder_refuses_what_the_format_cannot_hold() {
    let long_name = Message::new(vec![Header::new("n".repeat(256), HeaderValue::Bool(true))], Vec::new());
    assert!(matches!(long_name.encode(), Err(Error::Encode(_))));
    let long_value = Message::new(vec![Header::string("s", "v".repeat(32_768))], Vec::new());
    assert!(matches!(long_value.encode(), Err(Error::Encode(_))));
    let longest = Message::new(vec![Header::string("n".repeat(255), "v".repeat(32_767))], Vec::new());
    assert_eq!(Message::decode(&longest.encode().unwrap()).unwrap(), longest);
    // Nothing is appended on error.
    let mut out = vec![1, 2, 3];
    assert!(long_value.encode_into(&mut out).is_err());
    assert_eq!(out, vec![1, 2, 3]);
}

#[test]
fn an_exception_frame_names_its_type() {
    let m =
        Message::exception("throttlingException", "application/json", br#"{"message":"Too many requests"}"#.to_vec());
    let back = Message::decode(&m.encode().unwrap()).unwrap();
    assert_eq!(back.message_type(), Some("exception"));
    assert_eq!(back.exception_type(), Some("throttlingException"));
    assert_eq!(back.event_type(), None);
}

fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        any::<bool>().prop_map(HeaderValue::Bool),
        any::<i8>().prop_map(HeaderValue::Byte),
        any::<i16>().prop_map(HeaderValue::Int16),
        any::<i32>().prop_map(HeaderValue::Int32),
        any::<i64>().prop_map(HeaderValue::Int64),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(HeaderValue::Bytes),
        ".{0,20}".prop_map(HeaderValue::String),
        any::<i64>().prop_map(HeaderValue::Timestamp),
        any::<[u8; 16]>().prop_map(HeaderValue::Uuid),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    let header = ("[:a-z-]{0,12}|.{1,8}", header_value()).prop_map(|(n, v)| Header::new(n, v));
    (proptest::collection::vec(header, 0..6), proptest::collection::vec(any::<u8>(), 0..200))
        .prop_map(|(headers, payload)| Message::new(headers, payload))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_messages_round_trip_in_any_chunking(
        messages in proptest::collection::vec(message(), 1..5),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut stream = Vec::new();
        for m in &messages {
            m.encode_into(&mut stream).unwrap();
        }
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        at.push(0);
        at.push(stream.len());
        at.sort_unstable();
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for w in at.windows(2) {
            d.feed(&stream[w[0]..w[1]], &mut out).unwrap();
        }
        d.finish().unwrap();
        prop_assert_eq!(&out, &messages);
        for m in &messages {
            prop_assert_eq!(&Message::decode(&m.encode().unwrap()).unwrap(), m);
        }
    }

    #[test]
    fn corrupting_any_byte_is_detected(m in message(), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut bytes = m.encode().unwrap();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        // Either the frame is refused, or (a changed length) the stream ends
        // inside a message: never a wrong message.
        prop_assert!(decode_chunked(&bytes, 7).is_err());
        prop_assert!(Message::decode(&bytes).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), size in 1usize..40) {
        let _ = decode_chunked(&bytes, size);
        let _ = Message::decode(&bytes);
    }
}
