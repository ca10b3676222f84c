//! The client against a real QEMU (`-machine none`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use virtest_qmp::{Error, Options, Qmp, TranscriptWriter};

const SECS_5: Duration = Duration::from_secs(5);

#[tokio::test]
async fn greeting_version_and_query_status() {
    let qemu = common::Qemu::start();
    let qmp = qemu.connect().await;
    let greeting = qmp.greeting();
    assert!(greeting.version.0 >= 7, "{greeting:?}");
    assert!(
        greeting.capabilities.iter().any(|c| c == "oob"),
        "{greeting:?}"
    );
    let status = qmp.execute(qapi::qmp::query_status {}).await.unwrap();
    assert!(status.running);
    let raw = qmp.execute_raw("query-status", Value::Null).await.unwrap();
    assert_eq!(raw["running"], json!(true));
    assert_eq!(raw["status"], json!("running"));
}

#[tokio::test]
async fn stop_and_cont_events_reach_two_subscribers() {
    let qemu = common::Qemu::start();
    let qmp = qemu.connect().await;
    let mut first = qmp.subscribe();
    let mut second = qmp.subscribe();
    let since = qmp.event_cursor();
    qmp.execute(qapi::qmp::stop {}).await.unwrap();
    qmp.execute(qapi::qmp::cont {}).await.unwrap();
    // Waited for only now, after both happened: neither is missed.
    let stop = qmp
        .wait_event(since, "STOP", &Value::Null, SECS_5)
        .await
        .unwrap();
    let resume = qmp
        .wait_event(since, "RESUME", &Value::Null, SECS_5)
        .await
        .unwrap();
    assert!(stop.seq < resume.seq);
    assert!(matches!(stop.typed(), Some(qapi::qmp::Event::STOP { .. })));
    for sub in [&mut first, &mut second] {
        assert_eq!(sub.next_within(SECS_5).await.unwrap().name, "STOP");
        assert_eq!(sub.next_within(SECS_5).await.unwrap().name, "RESUME");
    }
    assert!(
        qmp.execute(qapi::qmp::query_status {})
            .await
            .unwrap()
            .running
    );
}

/// On two worker threads, where commands from different tasks race to
/// the socket: a reply matched to the wrong command would show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_tasks_with_500_commands_each_get_their_own_replies() {
    let qemu = common::Qemu::start();
    let qmp = qemu.connect().await;
    let mut tasks = Vec::new();
    for task in 0..8 {
        let qmp = qmp.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..500 {
                if i % 2 == 0 {
                    // The error names the path this task sent: a reply
                    // routed to the wrong command would show it.
                    let path = format!("/virtest-task-{task}-command-{i}");
                    let err = qmp
                        .execute_raw("qom-list", json!({ "path": path }))
                        .await
                        .unwrap_err();
                    assert!(err.to_string().contains(&format!("'{path}'")), "{err}");
                } else {
                    let status = qmp.execute_raw("query-status", Value::Null).await.unwrap();
                    assert_eq!(status["status"], json!("running"));
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn typed_and_raw_commands_agree_and_hmp_works() {
    let qemu = common::Qemu::start();
    let qmp = qemu.connect().await;
    let typed = qmp.execute(qapi::qmp::query_name {}).await.unwrap();
    let raw = qmp.execute_raw("query-name", Value::Null).await.unwrap();
    assert_eq!(
        typed.name,
        raw.get("name").and_then(Value::as_str).map(str::to_string)
    );
    let info = qmp.hmp("info status").await.unwrap();
    assert!(info.contains("VM status: running"), "{info}");
}

#[tokio::test]
async fn a_command_error_carries_qemus_class_and_description() {
    let qemu = common::Qemu::start();
    let qmp = qemu.connect().await;
    let err = qmp
        .execute_raw("no-such-command", Value::Null)
        .await
        .unwrap_err();
    let Error::Command {
        command,
        class,
        desc,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(
        (command.as_str(), class.as_str()),
        ("no-such-command", "CommandNotFound")
    );
    assert!(desc.contains("no-such-command"), "{desc}");
    // The connection is still good.
    qmp.execute(qapi::qmp::query_status {}).await.unwrap();
}

#[tokio::test]
async fn quit_succeeds_and_then_commands_say_disconnected() {
    let mut qemu = common::Qemu::start();
    let qmp = qemu.connect().await;
    let mut events = qmp.subscribe();
    qmp.quit().await.unwrap();
    assert!(qemu.wait_exit(SECS_5).success());
    // SHUTDOWN arrives, then the subscription ends.
    assert_eq!(events.next_within(SECS_5).await.unwrap().name, "SHUTDOWN");
    assert!(matches!(
        events.next_within(SECS_5).await,
        Err(Error::Disconnected { .. })
    ));
    let err = qmp
        .execute_raw("query-status", Value::Null)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Disconnected { .. }), "{err}");
    assert!(qmp.is_closed());
}

/// Connects to `qemu`, its transcript written to `out`.
async fn connect_with_transcript(
    qemu: &common::Qemu,
    out: Box<dyn std::io::Write + Send>,
) -> (Qmp, TranscriptWriter) {
    let transcript = TranscriptWriter::spawn(out).unwrap();
    let options = Options {
        transcript: Some(transcript.clone()),
        ..Options::default()
    };
    let qmp = Qmp::connect_unix(&qemu.socket, SECS_5, options)
        .await
        .unwrap();
    (qmp, transcript)
}

#[tokio::test]
async fn the_transcript_has_every_line_both_ways() {
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let qemu = common::Qemu::start();
    let log = Shared::default();
    let (qmp, transcript) = connect_with_transcript(&qemu, Box::new(log.clone())).await;
    qmp.execute(qapi::qmp::query_status {}).await.unwrap();
    transcript.written().await;
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].contains(" <- {\"QMP\""), "{text}");
    assert!(
        lines[1].contains(" -> {\"execute\":\"qmp_capabilities\""),
        "{text}"
    );
    assert!(
        lines[3].contains(" -> {\"execute\":\"query-status\""),
        "{text}"
    );
    assert!(
        lines[4].contains(" <- {\"return\": {\"status\": \"running\""),
        "{text}"
    );
    let stamp: f64 = lines[0].split(' ').next().unwrap().parse().unwrap();
    assert!(stamp > 1.7e9, "{stamp}");
}

#[tokio::test]
async fn the_transcript_ends_with_what_qemu_sent_before_it_quit() {
    let qemu = common::Qemu::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp.log");
    let file = std::fs::File::create(&path).unwrap();
    let (qmp, transcript) = connect_with_transcript(&qemu, Box::new(file)).await;
    qmp.quit().await.unwrap();
    tokio::time::timeout(SECS_5, qmp.reader_stopped())
        .await
        .expect("the reader stops once QEMU closes QMP");
    // At once, too, once stopped.
    qmp.reader_stopped().await;
    transcript.written().await;
    let text = std::fs::read_to_string(&path).unwrap();
    let events = virtest_qmp::transcript::events(&text);
    assert_eq!(
        events.last().map(|e| e["event"].clone()),
        Some(json!("SHUTDOWN")),
        "{text}"
    );
}

#[tokio::test]
async fn a_socket_that_never_appears_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let err = Qmp::connect_unix(
        &dir.path().join("none.sock"),
        Duration::from_millis(300),
        Options::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains("none.sock"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn tcp_and_out_of_band_negotiation_work() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let binary = std::env::var_os("QEMU").unwrap_or_else(|| "qemu-system-x86_64".into());
    let mut child = std::process::Command::new(binary)
        .args([
            "-machine",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-qmp",
        ])
        .arg(format!("tcp:127.0.0.1:{port},server=on,wait=off"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let options = Options {
        oob: true,
        ..Options::default()
    };
    let result = Qmp::connect_tcp(
        ([127, 0, 0, 1], port).into(),
        Duration::from_secs(10),
        options,
    )
    .await;
    let outcome = async {
        let qmp = result?;
        // With oob enabled, QEMU requires an id on every command: ours all have one.
        let status = qmp.execute(qapi::qmp::query_status {}).await?;
        assert!(status.running);
        // Out of band, QEMU runs the command itself and answers: here
        // that there is no postcopy to pause.
        let paused = qmp
            .execute_oob_within(qapi::qmp::migrate_pause {}, Duration::from_secs(5))
            .await;
        match paused {
            Err(Error::Command { desc, .. }) => assert!(desc.contains("postcopy"), "{desc}"),
            other => panic!("migrate-pause out of band: {other:?}"),
        }
        qmp.quit().await
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    outcome.unwrap();
}

/// Out of band needs `oob` negotiated: a connection without it refuses
/// before anything is sent.
#[tokio::test]
async fn out_of_band_without_negotiating_it_is_refused() {
    let qemu = common::Qemu::start();
    let qmp = qemu.connect().await;
    let error = qmp
        .execute_oob_within(qapi::qmp::migrate_pause {}, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("did not negotiate `oob`"),
        "{error}"
    );
    assert!(qmp.execute(qapi::qmp::query_status {}).await.is_ok());
}

#[tokio::test]
async fn a_file_descriptor_passes_with_getfd_and_closes_by_name() {
    use std::os::fd::AsFd;
    let qemu = common::Qemu::start();
    let qmp = qemu.connect().await;
    let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    // Other commands in flight at the same time keep their order.
    let (passed, status) = tokio::join!(
        qmp.execute_with_fd("getfd", json!({"fdname": "test-fd"}), ours.as_fd()),
        qmp.execute_raw("query-status", Value::Null),
    );
    passed.unwrap();
    assert_eq!(status.unwrap()["status"], json!("running"));
    qmp.execute_raw("closefd", json!({"fdname": "test-fd"}))
        .await
        .unwrap();
    // Closed once: the name is gone.
    let error = qmp
        .execute_raw("closefd", json!({"fdname": "test-fd"}))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Command { .. }), "{error:?}");
    // Without a descriptor attached, getfd fails.
    let error = qmp
        .execute_raw("getfd", json!({"fdname": "none"}))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("file descriptor"), "{error}");
}

/// Futures of the client can move between threads (`tokio::spawn`).
#[allow(dead_code)]
fn futures_are_send(qmp: &Qmp) {
    fn send<T: Send>(_: T) {}
    send(qmp.execute_raw("query-status", Value::Null));
    send(qmp.wait_event(qmp.event_cursor(), "STOP", &Value::Null, SECS_5));
    send(qmp.subscribe().next());
}
