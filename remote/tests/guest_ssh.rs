//! virtest-remote's SSH session against the default guest's dropbear.

use virtest_testkit as common;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::Qemu;
use virtest_remote::{Auth, Error, OutputStream, RunOptions, SshConfig, SshSession};

fn config(port: u16, auth: Auth) -> SshConfig {
    let m = common::guest();
    SshConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        user: m.credentials.user.clone(),
        auth,
        known_host_keys: vec![m.host_key.public.clone()],
    }
}

fn key() -> Auth {
    Auth::KeyFile(common::guest().private_key_path())
}

#[tokio::test]
async fn commands_run_with_exit_codes_separate_streams_big_output_and_deadlines() {
    let mut vm = Qemu::boot(false);
    vm.wait_ready(1, Duration::from_secs(30));
    let ssh = SshSession::wait_for_login(&config(vm.port, key()), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        ssh.host_key_fingerprint(),
        common::guest().host_key.fingerprint
    );

    let r = ssh.run("echo out; echo err >&2; exit 0").await.unwrap();
    assert_eq!(
        (r.stdout.as_str(), r.stderr.as_str(), r.exit_status),
        ("out\n", "err\n", 0)
    );

    let err = ssh
        .run("echo partial; echo broken >&2; exit 3")
        .await
        .unwrap_err();
    let Error::Exit(result) = &err else {
        panic!("{err}")
    };
    assert_eq!(result.exit_status, 3);
    assert!(
        err.to_string().contains("exited with status 3") && err.to_string().contains("broken"),
        "{err}"
    );
    let unchecked = RunOptions {
        check: false,
        ..RunOptions::default()
    };
    assert_eq!(
        ssh.run_with("exit 7", &unchecked)
            .await
            .unwrap()
            .exit_status,
        7
    );

    // 10 MiB on stdout while stderr also has data.
    let big = ssh
        .run("head -c 10485760 /dev/zero | tr '\\0' x; echo done >&2")
        .await
        .unwrap();
    assert_eq!(big.stdout.len(), 10 << 20);
    assert_eq!(big.stderr, "done\n");

    // Output past the bound is an error naming the command and the
    // stream, and the session still serves the next command.
    let bounded = RunOptions {
        max_output: 1 << 20,
        ..RunOptions::default()
    };
    let err = ssh
        .run_with("head -c 4194304 /dev/zero", &bounded)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::OutputTooLarge { stream: OutputStream::Stdout, limit, .. } if *limit == 1 << 20
        ),
        "{err}"
    );
    assert!(err.to_string().contains("head -c 4194304"), "{err}");
    assert_eq!(ssh.run("echo still").await.unwrap().stdout, "still\n");

    // Both streams at once, interleaved line by line: libssh2 reads
    // whatever the socket holds when either stream is read, so each
    // stream's data can sit in its queue while the other waits. Every
    // line of both must arrive, each time.
    let interleaved = "i=0; while [ $i -lt 3000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done";
    for _ in 0..5 {
        let r = ssh.run(interleaved).await.unwrap();
        let lines = |text: &str, prefix: &str| {
            let all: Vec<&str> = text.lines().collect();
            assert_eq!(
                all.len(),
                3000,
                "{prefix}: {}",
                &text[text.len().saturating_sub(200)..]
            );
            assert!(
                all.iter()
                    .enumerate()
                    .all(|(i, l)| *l == format!("{prefix}{i}"))
            );
        };
        lines(&r.stdout, "out");
        lines(&r.stderr, "err");
    }

    let start = Instant::now();
    let slow = RunOptions {
        timeout: Duration::from_secs(2),
        ..RunOptions::default()
    };
    let err = ssh.run_with("sleep 30", &slow).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn commands_from_many_tasks_run_at_once_and_password_login_works() {
    let mut vm = Qemu::boot(false);
    vm.wait_ready(1, Duration::from_secs(30));
    let password = Auth::Password(common::guest().credentials.password.clone());
    let ssh = std::sync::Arc::new(
        SshSession::wait_for_login(&config(vm.port, password), Duration::from_secs(30))
            .await
            .unwrap(),
    );
    // More tasks than connections: the rest wait their turn.
    let tasks: Vec<_> = (0..virtest_remote::MAX_CONNECTIONS + 4)
        .map(|i| {
            let ssh = ssh.clone();
            tokio::spawn(async move { ssh.run(&format!("echo task-{i}")).await.unwrap().stdout })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), format!("task-{i}\n"));
    }

    // A command that waits for another never holds it up: the reader of
    // a FIFO ends only once the writer, sent after it, has run.
    ssh.run("mkfifo /tmp/fifo").await.unwrap();
    let reader = tokio::spawn({
        let ssh = ssh.clone();
        let options = RunOptions {
            timeout: Duration::from_secs(30),
            ..RunOptions::default()
        };
        async move { ssh.run_with("cat /tmp/fifo", &options).await }
    });
    // Let the reader's command start first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writer = RunOptions {
        timeout: Duration::from_secs(30),
        ..RunOptions::default()
    };
    ssh.run_with("echo through > /tmp/fifo", &writer)
        .await
        .unwrap();
    assert_eq!(reader.await.unwrap().unwrap().stdout, "through\n");

    // A wrong password is refused at once, not retried to a timeout.
    let start = Instant::now();
    let wrong = config(vm.port, Auth::Password("not-the-password".into()));
    let err = SshSession::wait_for_login(&wrong, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Auth {
                method: "password",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        !err.to_string().contains("not-the-password"),
        "no password in errors: {err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );

    // A host key we do not trust is refused.
    let mut untrusted = config(vm.port, key());
    untrusted.known_host_keys = vec![
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyV3n5OaJsuPhY0T7X1Nh3wRsdvLzPlxq5ECoSj6oxn".into(),
    ];
    let err = SshSession::connect(&untrusted, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::HostKey { .. }), "{err}");
}

#[tokio::test]
async fn a_guest_powered_off_mid_command_is_an_error_not_a_hang() {
    let mut vm = Qemu::boot(false);
    vm.wait_ready(1, Duration::from_secs(30));
    let ssh = SshSession::wait_for_login(&config(vm.port, key()), Duration::from_secs(30))
        .await
        .unwrap();
    let start = Instant::now();
    let run = ssh.run("sleep 60");
    let kill = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = vm.child.kill();
        let _ = vm.child.wait();
    };
    let (result, ()) = tokio::join!(run, kill);
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Channel { .. }), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_closed_port_and_a_server_that_is_not_ssh_are_clear_errors() {
    let closed = common::free_port();
    let err = SshSession::connect(&config(closed, key()), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    let err = SshSession::wait_for_login(&config(closed, key()), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotUp { last, .. } if matches!(**last, Error::Connect { .. })),
        "{err}"
    );

    // A server that answers with something other than SSH.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::Write;
        for stream in listener.incoming().take(1) {
            let mut stream = stream.unwrap();
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let start = Instant::now();
    let err = SshSession::connect(&config(port, key()), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Handshake { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn files_and_trees_round_trip_with_their_modes() {
    use std::os::unix::fs::PermissionsExt;
    let mut vm = Qemu::boot(false);
    vm.wait_ready(1, Duration::from_secs(30));
    let ssh = SshSession::wait_for_login(&config(vm.port, key()), Duration::from_secs(30))
        .await
        .unwrap();
    let local = tempfile::tempdir().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

    // 1 MiB of every byte value, executable.
    let file = local.path().join("blob");
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o751)).unwrap();
    ssh.send_file(&file, "/tmp/blob copy").await.unwrap();
    assert_eq!(
        ssh.run("stat -c %a '/tmp/blob copy'").await.unwrap().stdout,
        "751\n"
    );
    let back = local.path().join("back");
    ssh.receive_file("/tmp/blob copy", &back).await.unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), data);
    assert_eq!(mode(&back), 0o751);

    // A tree with a nested directory and distinct modes.
    let tree = local.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("script.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        tree.join("script.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(tree.join("sub/deeper/secret"), "s3cret").unwrap();
    std::fs::set_permissions(
        tree.join("sub/deeper/secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    ssh.send_tree(&tree, "/tmp/tree").await.unwrap();
    assert_eq!(ssh.run("/tmp/tree/script.sh").await.unwrap().stdout, "hi\n");
    let returned = local.path().join("returned");
    ssh.receive_tree("/tmp/tree", &returned).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(returned.join("sub/deeper/secret")).unwrap(),
        "s3cret"
    );
    assert_eq!(mode(&returned.join("sub/deeper/secret")), 0o600);
    assert_eq!(mode(&returned.join("script.sh")), 0o755);

    // 24 MiB, more than any buffer on the way: streamed, not held.
    let big = local.path().join("big");
    ssh.run("head -c 25165824 /dev/urandom > /tmp/big")
        .await
        .unwrap();
    ssh.receive_file("/tmp/big", &big).await.unwrap();
    let guest_sum = ssh.run("md5sum < /tmp/big").await.unwrap().stdout;
    assert_eq!(std::fs::metadata(&big).unwrap().len(), 24 << 20);
    ssh.run("rm /tmp/big").await.unwrap();
    ssh.send_file(&big, "/tmp/big again").await.unwrap();
    assert_eq!(
        ssh.run("md5sum < '/tmp/big again'").await.unwrap().stdout,
        guest_sum
    );
    ssh.run("rm '/tmp/big again'").await.unwrap();

    // A missing remote file is an error that names the command, and the
    // destination is left as it was, with no partial file beside it.
    let kept = local.path().join("kept");
    std::fs::write(&kept, "before").unwrap();
    let err = ssh.receive_file("/nonexistent", &kept).await.unwrap_err();
    assert!(
        matches!(err, Error::Exit(_)) && err.to_string().contains("/nonexistent"),
        "{err}"
    );
    let err = ssh.receive_file("/proc/self/mem", &kept).await.unwrap_err();
    assert!(matches!(err, Error::Exit(_)), "{err}");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "before");
    let entries = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        entries(local.path()),
        ["back", "big", "blob", "kept", "returned", "tree"]
    );

    // Local trouble names the local path, and the session carries on.
    let missing = local.path().join("no such tree");
    let err = ssh.send_tree(&missing, "/tmp/t2").await.unwrap_err();
    assert!(
        matches!(&err, Error::Local { path, .. } if *path == missing),
        "{err}"
    );
    // Guest trouble is the guest's to explain: its command and status.
    let err = ssh.send_tree(&tree, "/proc/no/tree").await.unwrap_err();
    assert!(
        matches!(&err, Error::Exit(result) if result.stderr.contains("/proc/no")),
        "{err}"
    );
    let blocked = local.path().join("blocked");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("sub"), "a file where the tree has a directory").unwrap();
    let err = ssh.receive_tree("/tmp/tree", &blocked).await.unwrap_err();
    assert!(
        matches!(&err, Error::Local { path, .. } if *path == blocked),
        "{err}"
    );
    assert_eq!(ssh.run("echo on").await.unwrap().stdout, "on\n");
}

#[tokio::test]
async fn streaming_hands_over_lines_while_the_command_runs() {
    use virtest_remote::OutputStream;
    let mut vm = Qemu::boot(false);
    vm.wait_ready(1, Duration::from_secs(30));
    let ssh = SshSession::wait_for_login(&config(vm.port, key()), Duration::from_secs(30))
        .await
        .unwrap();
    let start = Instant::now();
    let mut lines: Vec<(OutputStream, String, Duration)> = Vec::new();
    let command = "for i in 1 2 3; do echo line $i; echo warn $i >&2; sleep 1; done; printf tail";
    let result = ssh
        .run_streaming(command, &RunOptions::default(), |stream, line| {
            lines.push((stream, line.to_string(), start.elapsed()))
        })
        .await
        .unwrap();
    let text = |s| {
        lines
            .iter()
            .filter(|l| l.0 == s)
            .map(|l| l.1.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        text(OutputStream::Stdout),
        ["line 1", "line 2", "line 3", "tail"]
    );
    assert_eq!(text(OutputStream::Stderr), ["warn 1", "warn 2", "warn 3"]);
    assert_eq!(result.stdout, "line 1\nline 2\nline 3\ntail");
    // The first line came while the command still had two seconds to run.
    let first = lines.iter().find(|l| l.1 == "line 1").unwrap().2;
    assert!(
        first + Duration::from_millis(1500) < start.elapsed(),
        "first line at {first:?} of {:?}",
        start.elapsed()
    );
}
