//! The guest agent's protocol against the real `qemu-ga` (Debian's
//! qemu-guest-agent), run on the host on a unix socket of the test's:
//! sync, typed commands, exec with output and status, errors; and the
//! input a real agent never sends, from a fake one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use qapi::qga;
use virtest_qmp::{Error, Qga};

/// `qemu-ga` listening on `dir/qga.sock`, killed when dropped.
struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let socket = dir.join("qga.sock");
        let child = Command::new("qemu-ga")
            .args(["-m", "unix-listen", "-p"])
            .arg(&socket)
            .arg("-t")
            .arg(dir)
            .spawn()
            .expect("qemu-ga (Debian's qemu-guest-agent) is installed (.ci/install does it)");
        Agent { child, socket }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_real_agent_answers_typed_commands() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let qga = Qga::connect_unix(&agent.socket, Duration::from_secs(10))
        .await
        .unwrap();
    qga.execute(qga::guest_ping {}).await.unwrap();
    let info = qga.execute(qga::guest_info {}).await.unwrap();
    assert!(info.version.starts_with("7."), "{}", info.version);
    assert!(
        info.supported_commands
            .iter()
            .any(|c| c.name == "guest-exec"),
        "{:?}",
        info.supported_commands
    );

    let done = qga
        .exec(
            &["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(
        (done.exit_code, &done.stdout[..], &done.stderr[..]),
        (Some(3), &b"out\n"[..], &b"err\n"[..])
    );
    assert!(!done.success());

    let error = qga
        .execute_raw_within(
            "guest-no-such-command",
            serde_json::Value::Null,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    match &error {
        Error::AgentCommand { command, class, .. } => {
            assert_eq!(command, "guest-no-such-command");
            assert_eq!(class, "CommandNotFound");
        }
        other => panic!("{other}"),
    }
    // The connection still works after an error.
    qga.execute(qga::guest_ping {}).await.unwrap();
    // A shutdown is answered only when it fails: a bad mode's error
    // comes back (a good mode would shut this host down).
    let refused = qga.shutdown("sideways").await.unwrap_err();
    assert!(
        matches!(&refused, Error::AgentCommand { command, .. } if command == "guest-shutdown"),
        "{refused}"
    );
    qga.execute(qga::guest_ping {}).await.unwrap();
}

/// A file written through the agent (several chunks) reads back the
/// same; a missing file's error is the agent's; a program still running
/// at its deadline is a timeout that names it.
#[tokio::test]
async fn files_round_trip_and_exec_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let qga = Qga::connect_unix(&agent.socket, Duration::from_secs(10))
        .await
        .unwrap();
    let content: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let path = dir.path().join("file");
    let path = path.to_str().unwrap();
    qga.write_file(path, &content).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), content);
    assert_eq!(qga.read_file(path).await.unwrap(), content);
    qga.write_file(path, b"short").await.unwrap();
    assert_eq!(qga.read_file(path).await.unwrap(), b"short", "not replaced");

    let missing = qga.read_file("/nonexistent/file").await.unwrap_err();
    assert!(
        matches!(&missing, Error::AgentCommand { command, .. } if command == "guest-file-open"),
        "{missing}"
    );
    let start = std::time::Instant::now();
    let slow = qga
        .exec(&["sleep", "5"], Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(
        matches!(&slow, Error::Timeout { what, .. } if what.contains("`sleep 5`")),
        "{slow}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    qga.execute(qga::guest_ping {}).await.unwrap();
}

#[tokio::test]
async fn no_agent_is_a_connect_error_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let error = Qga::connect_unix(&dir.path().join("none.sock"), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// A fake agent: answers the sync, then sends `reply` to the next
/// command, or stays silent when it is empty.
async fn fake_agent(socket: PathBuf, reply: &'static [u8]) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut sync = Vec::new();
    reader.read_until(b'\n', &mut sync).await.unwrap();
    // The client's 0xFF comes before the sync.
    let sync: serde_json::Value = serde_json::from_slice(&sync[1..]).unwrap();
    let id = sync["arguments"]["id"].as_u64().unwrap();
    let mut answer = vec![0xff];
    answer.extend(format!("{{\"return\": {id}}}\n").into_bytes());
    writer.write_all(&answer).await.unwrap();
    let mut command = Vec::new();
    reader.read_until(b'\n', &mut command).await.unwrap();
    if !reply.is_empty() {
        writer.write_all(reply).await.unwrap();
    }
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn garbage_and_silence_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("garbage.sock");
    tokio::spawn(fake_agent(socket.clone(), b"not json at all\n"));
    let qga = Qga::connect_unix(&socket, Duration::from_secs(5))
        .await
        .unwrap();
    let error = qga.execute(qga::guest_ping {}).await.unwrap_err();
    assert!(
        matches!(&error, Error::Protocol(text) if text.contains("not JSON") && text.contains("not json at all")),
        "{error}"
    );

    let socket = dir.path().join("silent.sock");
    tokio::spawn(fake_agent(socket.clone(), b""));
    let qga = Qga::connect_unix(&socket, Duration::from_secs(5))
        .await
        .unwrap();
    let error = qga
        .execute_within(qga::guest_ping {}, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Timeout { what, .. } if what.contains("guest-ping")),
        "{error}"
    );
}
