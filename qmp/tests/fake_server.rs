//! The client against a scripted server, for input a real QEMU would not
//! send. Every test is bounded in time: no hang, no panic.

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};
use virtest_qmp::{Error, Options, Qmp};

const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}"#;

/// The server side of a pipe.
struct Server {
    read: BufReader<ReadHalf<DuplexStream>>,
    write: WriteHalf<DuplexStream>,
}

impl Server {
    async fn send(&mut self, line: &str) {
        self.write.write_all(line.as_bytes()).await.unwrap();
        self.write.write_all(b"\r\n").await.unwrap();
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.write.write_all(bytes).await.unwrap();
    }

    /// Reads one command and returns it.
    async fn recv(&mut self) -> Value {
        let mut line = String::new();
        self.read.read_line(&mut line).await.unwrap();
        serde_json::from_str(&line).unwrap()
    }

    /// Greets and answers `qmp_capabilities`.
    async fn greet(&mut self) {
        self.send(GREETING).await;
        let cmd = self.recv().await;
        assert_eq!(cmd["execute"], "qmp_capabilities");
        self.send(&json!({"return": {}, "id": cmd["id"]}).to_string())
            .await;
    }
}

/// Runs `server` against a client connected through a pipe, and `client`
/// with that connection, both within 10 s.
async fn with_server<S, C, SF, CF>(server: S, client: C)
where
    S: FnOnce(Server) -> SF,
    SF: Future<Output = ()> + Send + 'static,
    C: FnOnce(Result<Qmp, Error>) -> CF,
    CF: Future<Output = ()>,
{
    with_server_options(Options::default(), server, client).await
}

/// [`with_server`] with the client's options.
async fn with_server_options<S, C, SF, CF>(options: Options, server: S, client: C)
where
    S: FnOnce(Server) -> SF,
    SF: Future<Output = ()> + Send + 'static,
    C: FnOnce(Result<Qmp, Error>) -> CF,
    CF: Future<Output = ()>,
{
    let (ours, theirs) = tokio::io::duplex(64 << 20);
    let (read, write) = tokio::io::split(theirs);
    let server = tokio::spawn(server(Server {
        read: BufReader::new(read),
        write,
    }));
    let run = async {
        let qmp = Qmp::handshake(ours, Duration::from_secs(2), options).await;
        client(qmp).await;
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the test finished in time");
    server.abort();
}

#[tokio::test]
async fn malformed_json_is_skipped_and_the_stream_goes_on() {
    with_server(
        |mut s| async move {
            s.greet().await;
            let cmd = s.recv().await;
            s.send("{this is not json").await;
            s.send("[\"an array\"]").await;
            s.send(&json!({"return": 42, "id": cmd["id"]}).to_string())
                .await;
            std::future::pending::<()>().await;
        },
        |qmp| async move {
            let qmp = qmp.unwrap();
            assert_eq!(
                qmp.execute_raw("anything", Value::Null).await.unwrap(),
                json!(42)
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_line_cut_short_by_eof_fails_the_pending_command() {
    with_server(
        |mut s| async move {
            s.greet().await;
            let _ = s.recv().await;
            s.send_raw(b"{\"return\": {\"status\": \"runn").await;
            // Dropping the server closes the stream mid-message.
        },
        |qmp| async move {
            let err = qmp.unwrap().execute_raw("query-status", Value::Null).await.unwrap_err();
            assert!(matches!(&err, Error::Disconnected { reason } if reason.contains("middle of a message")), "{err}");
        },
    )
    .await;
}

#[tokio::test]
async fn a_16_mib_reply_arrives_whole() {
    with_server(
        |mut s| async move {
            s.greet().await;
            let cmd = s.recv().await;
            let big = "y".repeat(16 << 20);
            s.send(&json!({"return": big, "id": cmd["id"]}).to_string())
                .await;
            std::future::pending::<()>().await;
        },
        |qmp| async move {
            let reply = qmp.unwrap().execute_raw("big", Value::Null).await.unwrap();
            assert_eq!(reply.as_str().unwrap().len(), 16 << 20);
        },
    )
    .await;
}

#[tokio::test]
async fn unknown_events_and_enum_values_pass_through() {
    with_server(
        |mut s| async move {
            s.greet().await;
            let cmd = s.recv().await;
            s.send(r#"{"event": "FROM_THE_FUTURE", "data": {"x": 1}, "timestamp": {"seconds": 1, "microseconds": 2}}"#).await;
            s.send(r#"{"event": "MIGRATION", "data": {"status": "teleporting"}, "timestamp": {"seconds": 1, "microseconds": 3}}"#).await;
            s.send(r#"{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 4}}"#).await;
            s.send(&json!({"return": {}, "id": cmd["id"]}).to_string()).await;
            std::future::pending::<()>().await;
        },
        |qmp| async move {
            let qmp = qmp.unwrap();
            let mut events = qmp.subscribe();
            qmp.execute_raw("trigger", Value::Null).await.unwrap();
            let future = events.next().await.unwrap();
            assert_eq!((future.name.as_str(), &future.data), ("FROM_THE_FUTURE", &json!({"x": 1})));
            assert!(future.typed().is_none());
            let migration = events.next().await.unwrap();
            assert_eq!(migration.data["status"], "teleporting");
            assert!(migration.typed().is_none());
            let stop = events.next().await.unwrap();
            assert!(matches!(stop.typed(), Some(qapi::qmp::Event::STOP { .. })));
        },
    )
    .await;
}

#[tokio::test]
async fn a_reply_with_an_unknown_id_is_dropped() {
    with_server(
        |mut s| async move {
            s.greet().await;
            let cmd = s.recv().await;
            s.send(r#"{"return": "stray", "id": 999999}"#).await;
            s.send(r#"{"return": "stray", "id": "not-ours"}"#).await;
            s.send(&json!({"return": "mine", "id": cmd["id"]}).to_string())
                .await;
            std::future::pending::<()>().await;
        },
        |qmp| async move {
            assert_eq!(
                qmp.unwrap().execute_raw("x", Value::Null).await.unwrap(),
                json!("mine")
            );
        },
    )
    .await;
}

#[tokio::test]
async fn replies_go_to_commands_in_order_and_carry_no_id() {
    with_server(
        |mut s| async move {
            s.greet().await;
            let first = s.recv().await;
            let second = s.recv().await;
            assert_eq!((first["execute"].as_str(), first.get("id")), (Some("first"), None));
            assert_eq!(second["execute"], "second");
            s.send(r#"{"error": {"class": "GenericError", "desc": "first failed"}}"#).await;
            s.send(r#"{"return": "second's"}"#).await;
            std::future::pending::<()>().await;
        },
        |qmp| async move {
            let qmp = qmp.unwrap();
            let first = qmp.execute_raw("first", Value::Null);
            let second = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                qmp.execute_raw("second", Value::Null).await
            };
            let (first, second) = tokio::join!(first, second);
            let err = first.unwrap_err();
            assert!(matches!(&err, Error::Command { command, desc, .. } if command == "first" && desc == "first failed"), "{err}");
            assert_eq!(second.unwrap(), json!("second's"));
        },
    )
    .await;
}

#[tokio::test]
async fn a_late_reply_to_a_timed_out_command_does_not_reach_the_next() {
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (read, write) = tokio::io::split(theirs);
    let mut s = Server {
        read: BufReader::new(read),
        write,
    };
    let server = tokio::spawn(async move {
        s.greet().await;
        let _slow = s.recv().await;
        let _next = s.recv().await;
        s.send(r#"{"return": "for the slow one"}"#).await;
        s.send(r#"{"return": "for the next one"}"#).await;
        std::future::pending::<()>().await;
    });
    let options = Options {
        command_timeout: Duration::from_millis(200),
        ..Options::default()
    };
    let qmp = Qmp::handshake(ours, Duration::from_secs(2), options)
        .await
        .unwrap();
    let err = qmp.execute_raw("slow", Value::Null).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let next = tokio::time::timeout(Duration::from_secs(5), qmp.execute_raw("next", Value::Null))
        .await
        .unwrap();
    assert_eq!(next.unwrap(), json!("for the next one"));
    server.abort();
}

#[tokio::test]
async fn with_out_of_band_an_error_without_id_fails_the_oldest_pending_command() {
    let options = Options {
        oob: true,
        ..Options::default()
    };
    with_server_options(
        options,
        |mut s| async move {
            s.greet().await;
            let first = s.recv().await;
            let second = s.recv().await;
            assert_eq!(first["execute"], "first");
            assert!(first.get("id").is_some(), "out-of-band mode sends ids");
            s.send(r#"{"error": {"class": "GenericError", "desc": "JSON parse error"}}"#).await;
            s.send(&json!({"return": "ok", "id": second["id"]}).to_string()).await;
            std::future::pending::<()>().await;
        },
        |qmp| async move {
            let qmp = qmp.unwrap();
            let first = qmp.execute_raw("first", Value::Null);
            let second = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                qmp.execute_raw("second", Value::Null).await
            };
            let (first, second) = tokio::join!(first, second);
            let err = first.unwrap_err();
            assert!(matches!(&err, Error::Protocol(m) if m.contains("`first`") && m.contains("JSON parse error")), "{err}");
            assert_eq!(second.unwrap(), json!("ok"));
        },
    )
    .await;
}

#[tokio::test]
async fn the_server_closing_fails_every_pending_command() {
    with_server(
        |mut s| async move {
            s.greet().await;
            for _ in 0..3 {
                let _ = s.recv().await;
            }
            // Returning drops both halves: the connection closes.
        },
        |qmp| async move {
            let qmp = qmp.unwrap();
            let results = futures_join3(
                qmp.execute_raw("a", Value::Null),
                qmp.execute_raw("b", Value::Null),
                qmp.execute_raw("c", Value::Null),
            )
            .await;
            for result in results {
                assert!(
                    matches!(result, Err(Error::Disconnected { .. })),
                    "{result:?}"
                );
            }
            assert!(qmp.is_closed());
        },
    )
    .await;
}

async fn futures_join3<T>(
    a: impl Future<Output = T>,
    b: impl Future<Output = T>,
    c: impl Future<Output = T>,
) -> [T; 3] {
    let (a, b, c) = tokio::join!(a, b, c);
    [a, b, c]
}

#[tokio::test]
async fn no_greeting_is_a_timeout() {
    with_server(
        |s| async move {
            let _held_open = s;
            std::future::pending::<()>().await
        },
        |qmp| async move {
            let err = qmp.unwrap_err();
            assert!(
                matches!(&err, Error::Timeout { what, .. } if what.contains("greeting")),
                "{err}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_greeting_that_is_not_qmp_is_refused() {
    for first_line in [
        "SSH-2.0-OpenSSH_9.2p1 Debian-2",
        r#"{"hello": "world"}"#,
        r#"{"return": {}}"#,
    ] {
        with_server(
            move |mut s| async move {
                s.send(first_line).await;
                std::future::pending::<()>().await;
            },
            |qmp| async move {
                let err = qmp.unwrap_err();
                assert!(matches!(err, Error::Greeting(_)), "{first_line}: {err}");
            },
        )
        .await;
    }
}

#[tokio::test]
async fn a_refused_negotiation_is_an_error() {
    with_server(
        |mut s| async move {
            s.send(GREETING).await;
            let cmd = s.recv().await;
            s.send(
                &json!({"error": {"class": "GenericError", "desc": "no"}, "id": cmd["id"]})
                    .to_string(),
            )
            .await;
            std::future::pending::<()>().await;
        },
        |qmp| async move {
            let err = qmp.unwrap_err();
            assert!(matches!(err, Error::Negotiation(_)), "{err}");
        },
    )
    .await;
}
