//! Property tests over the message decoder: any bytes, never a panic;
//! valid messages round-trip however the stream is cut.
//!
//! Run longer as a fuzzer: `PROPTEST_CASES=1000000 cargo test --release
//! -p virtest-qmp --test codec_fuzz`.

use proptest::prelude::*;
use serde_json::{Value, json};
use virtest_qmp::codec::{DecodeError, Message, decode};

/// Decodes a whole buffer into messages and errors, checking progress.
fn decode_all(mut bytes: &[u8]) -> Vec<Result<Message, DecodeError>> {
    let mut out = Vec::new();
    loop {
        match decode(bytes) {
            Ok(Some((message, used))) => {
                assert!(
                    used > 0 && used <= bytes.len(),
                    "used {used} of {}",
                    bytes.len()
                );
                out.push(Ok(message));
                bytes = &bytes[used..];
            }
            Ok(None) => return out,
            Err(e) => {
                out.push(Err(e));
                // Skip the bad line, as the client does.
                match bytes.iter().position(|&b| b == b'\n') {
                    Some(n) => bytes = &bytes[n + 1..],
                    None => return out,
                }
            }
        }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[ -~\\n\"\\\\é]{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z-]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn message() -> impl Strategy<Value = (Value, Message)> {
    let id = prop_oneof![
        any::<u32>().prop_map(|n| json!(n)),
        "[a-z0-9]{1,6}".prop_map(|s| json!(s))
    ];
    prop_oneof![
        (id.clone(), json_value()).prop_map(|(id, value)| {
            (json!({"return": value, "id": id}), Message::Return { id: Some(id), value })
        }),
        (id, "[A-Za-z]{1,12}", "[ -~]{0,40}").prop_map(|(id, class, desc)| {
            let wire = json!({"error": {"class": class, "desc": desc}, "id": id});
            (wire, Message::Error { id: Some(id), class, desc })
        }),
        ("[A-Z_]{1,20}", json_value(), any::<u32>(), 0u32..1_000_000).prop_map(|(name, data, s, us)| {
            let wire = json!({"event": name, "data": data, "timestamp": {"seconds": s, "microseconds": us}});
            let data = if data.is_null() { Value::Null } else { data };
            (wire, Message::Event { name, data, timestamp: Some((s as i64, us as i64)) })
        }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }

    #[test]
    fn arbitrary_lines_of_json_like_text_never_panic(lines in prop::collection::vec("[{}\\[\\]\":,a-z0-9 \\r]{0,60}", 0..8)) {
        decode_all(lines.join("\n").as_bytes());
    }

    #[test]
    fn messages_round_trip_however_the_stream_is_cut(
        messages in prop::collection::vec(message(), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut stream = Vec::new();
        for (wire, _) in &messages {
            stream.extend(serde_json::to_vec(wire).unwrap());
            stream.extend(b"\r\n");
        }
        // Feed the stream in pieces, as a socket would deliver it.
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(stream.len());
        points.sort();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        let mut fed = 0;
        for point in points {
            buf.extend_from_slice(&stream[fed..point]);
            fed = point;
            while let Some((message, used)) = decode(&buf).unwrap() {
                got.push(message);
                buf.drain(..used);
            }
        }
        let want: Vec<Message> = messages.into_iter().map(|(_, m)| m).collect();
        prop_assert_eq!(got, want);
        prop_assert!(buf.is_empty());
    }
}
