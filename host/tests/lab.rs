//! Simulated hosts against the real parts: network namespaces and veth
//! links, OpenSSH's sshd and client, QEMU listening and connecting on
//! unix sockets through the forwards. Needs root; without it each test
//! says why it is skipped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UnixListener, UnixStream};
use virtest_host::ssh::{Ssh, SshTarget};
use virtest_host::{Error, Host, Lab};
use virtest_testkit::{eventually, processes_with};

/// A lab in a fresh directory, or `None` (with the reason printed) when
/// this process may not make one.
async fn lab() -> Option<(Lab, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    match Lab::new(&dir.path().join("lab")).await {
        Ok(lab) => Some((lab, dir)),
        Err(error @ Error::NeedsRoot { .. }) => {
            eprintln!("skipped: {error}");
            None
        }
        Err(error) => panic!("{error}"),
    }
}

fn qemu() -> String {
    std::env::var("QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into())
}

/// Reads what a fresh QMP connection greets with.
async fn greeting(mut stream: UnixStream) -> String {
    let mut bytes = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut bytes))
        .await
        .expect("a greeting within 20 s")
        .unwrap();
    String::from_utf8_lossy(&bytes[..read]).into_owned()
}

/// Connects to `socket` until something listens behind it: a forward
/// accepts at once and closes when nothing is there yet.
async fn greeting_when_up(socket: &Path) -> String {
    let started = Instant::now();
    loop {
        if let Ok(stream) = UnixStream::connect(socket).await {
            let said = greeting(stream).await;
            if !said.is_empty() {
                return said;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing behind {socket:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reachable(address: &str) -> bool {
    let connect = TcpStream::connect((address, 22));
    matches!(
        tokio::time::timeout(Duration::from_secs(2), connect).await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn hosts_have_their_own_network_and_reach_each_other() {
    let Some((lab, _dir)) = lab().await else {
        return;
    };
    let b = lab.add_host("b").await.unwrap();
    let c = lab.add_host("c").await.unwrap();
    let (b_address, c_address) = (b.address().unwrap(), c.address().unwrap());
    assert_ne!(b_address, c_address);
    let said = b.check(&["ip", "-brief", "address"]).await.unwrap();
    assert!(said.contains(&format!("{b_address}/24")), "{said}");
    assert!(!said.contains(c_address), "{said}");
    // From b, over the switch, c's sshd answers.
    let probe = format!("exec 3<>/dev/tcp/{c_address}/22 && head -c 4 <&3");
    assert_eq!(b.check(&["bash", "-c", &probe]).await.unwrap(), "SSH-");
    // The test's side reaches both; the local host knows its address.
    assert!(reachable(b_address).await && reachable(c_address).await);
    assert!(lab.local().address().unwrap().starts_with("10.251."));
    assert!(b.storage_dir().unwrap().is_dir());
    assert!(lab.add_host("b").await.is_err(), "a second host named b");
}

#[tokio::test]
async fn a_process_on_a_host_dies_with_its_owner() {
    let Some((lab, dir)) = lab().await else {
        return;
    };
    let b = lab.add_host("b").await.unwrap();
    let there = b.runtime_dir().unwrap();
    // Found by its command line: pids wrap around fast on a busy machine
    // (pid_max is 32768 here), and the pid file holds the host's own.
    let seconds = marker(301);
    let process = b
        .spawn(
            &["sleep", &seconds],
            &there.join("sleep.pid"),
            Stdio::null(),
            Stdio::null(),
        )
        .unwrap();
    read_pid(&b, &there.join("sleep.pid")).await;
    let sleeping = || processes_with(&format!("sleep\0{seconds}"));
    assert!(!sleeping().is_empty(), "the sleep and its watchdog run");
    drop(process);
    assert!(
        eventually(Duration::from_secs(5), || sleeping().is_empty()),
        "sleep outlived its client"
    );

    // Its exit status is the process's own.
    let pid_file = there.join("exits.pid");
    let exits = b
        .spawn(
            &["sh", "-c", "exit 7"],
            &pid_file,
            Stdio::null(),
            Stdio::null(),
        )
        .unwrap();
    assert_eq!(exits.wait().await.code(), Some(7));

    // `signal` reaches it there.
    let pid_file = there.join("signalled.pid");
    let log = dir.path().join("signalled.log");
    let signalled = b
        .spawn(
            &["sleep", "300"],
            &pid_file,
            Stdio::null(),
            std::fs::File::create(&log).unwrap().into(),
        )
        .unwrap();
    read_pid(&b, &pid_file).await;
    b.signal(&pid_file, "TERM").await.unwrap();
    let status = signalled
        .wait_within(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(128 + 15));
}

/// `base.<this process's pid>`: seconds for a `sleep` that no other
/// test's has.
fn marker(base: u32) -> String {
    format!("{base}.{}", std::process::id())
}

async fn read_pid(host: &Host, pid_file: &Path) -> u32 {
    let started = Instant::now();
    loop {
        if let Ok(text) = host.check(&["cat", &pid_file.to_string_lossy()]).await
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no pid file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// QEMU on host b serves QMP on a socket there, reached from here, and
/// connects a second monitor to a socket here, reached from there.
#[tokio::test]
async fn qemus_sockets_are_reached_both_ways() {
    let Some((lab, dir)) = lab().await else {
        return;
    };
    let b = lab.add_host("b").await.unwrap();
    let there = b.runtime_dir().unwrap();
    let here = dir.path();
    let listener = UnixListener::bind(here.join("monitor.sock")).unwrap();
    let monitor = b
        .serve_socket(&here.join("monitor.sock"), &there.join("monitor.sock"))
        .await
        .unwrap();
    assert_eq!(monitor, there.join("monitor.sock"));
    let qmp_there = there.join("qmp.sock");
    let argv = [
        qemu(),
        "-machine".into(),
        "none".into(),
        "-display".into(),
        "none".into(),
        "-nodefaults".into(),
        "-chardev".into(),
        format!("socket,id=mon,path={},server=off", monitor.display()),
        "-mon".into(),
        "chardev=mon,mode=control".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp_there.display()),
        "-qmp".into(),
        "tcp:127.0.0.1:4444,server=on,wait=off".into(),
    ];
    let log = std::fs::File::create(here.join("qemu.log")).unwrap();
    let qemu = b
        .spawn(&argv, &there.join("qemu.pid"), Stdio::null(), log.into())
        .unwrap();
    let Ok(accepted) = tokio::time::timeout(Duration::from_secs(20), listener.accept()).await
    else {
        let said = std::fs::read_to_string(here.join("qemu.log")).unwrap();
        panic!("QEMU did not connect within 20 s; it said: {said}");
    };
    let (stream, _) = accepted.unwrap();
    assert!(greeting(stream).await.contains("\"QMP\""));
    let qmp_here = b
        .reach_socket(&qmp_there, &here.join("qmp.sock"))
        .await
        .unwrap();
    assert_eq!(qmp_here, here.join("qmp.sock"));
    assert!(greeting_when_up(&qmp_here).await.contains("\"QMP\""));
    // A TCP port on b's own 127.0.0.1, through a relay here.
    let port = b
        .reach_port(4444, &here.join("port-4444.sock"))
        .await
        .unwrap();
    assert!(port.is_relayed());
    let mut tcp = TcpStream::connect(("127.0.0.1", port.port)).await.unwrap();
    let mut bytes = vec![0u8; 4096];
    let read = tcp.read(&mut bytes).await.unwrap();
    assert!(String::from_utf8_lossy(&bytes[..read]).contains("\"QMP\""));
    drop(qemu);
    assert!(
        processes_with(&qmp_there.to_string_lossy()).is_empty()
            || eventually(Duration::from_secs(5), || processes_with(
                &qmp_there.to_string_lossy()
            )
            .is_empty())
    );
}

#[tokio::test]
async fn login_failures_name_the_host_and_the_problem() {
    let Some((lab, dir)) = lab().await else {
        return;
    };
    let b = lab.add_host("b").await.unwrap();
    let lab_dir = dir.path().join("lab");
    let good = SshTarget {
        name: "b".into(),
        address: b.address().unwrap().into(),
        port: 22,
        user: "root".into(),
        key: lab_dir.join("id_ed25519"),
        known_hosts: Some(lab_dir.join("known_hosts")),
        user_config: false,
    };
    let short = Duration::from_secs(10);
    let control = dir.path();
    // The good target logs in (a second master beside the host's own).
    let ssh = Ssh::connect(good.clone(), control, short).await.unwrap();
    assert_eq!(ssh.check(&["echo", "in"]).await.unwrap(), "in\n");
    drop(ssh);

    let other_key = dir.path().join("other");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other_key)
        .status()
        .unwrap();
    assert!(keygen.success());
    let wrong_key = SshTarget {
        key: other_key,
        ..good.clone()
    };
    let error = Ssh::connect(wrong_key, control, short).await.unwrap_err();
    assert!(matches!(error, Error::Auth { .. }), "{error}");
    assert!(
        error.to_string().contains("host `b` refused the key"),
        "{error}"
    );

    std::fs::write(dir.path().join("empty_known_hosts"), "").unwrap();
    let unknown = SshTarget {
        known_hosts: Some(dir.path().join("empty_known_hosts")),
        ..good.clone()
    };
    let error = Ssh::connect(unknown, control, short).await.unwrap_err();
    assert!(matches!(error, Error::HostKey { .. }), "{error}");

    let refused = SshTarget {
        port: 2222,
        ..good.clone()
    };
    let error = Ssh::connect(refused, control, short).await.unwrap_err();
    assert!(matches!(error, Error::Unreachable { .. }), "{error}");
    assert!(error.to_string().contains("Connection refused"), "{error}");

    // No host at that address: no answer at all.
    let range = lab.range();
    let nobody = range.replace(".0/24", ".250");
    let absent = SshTarget {
        address: nobody.clone(),
        ..good
    };
    let started = Instant::now();
    let error = Ssh::connect(absent, control, Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Unreachable { .. }), "{error}");
    assert!(error.to_string().contains(&nobody), "{error}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn link_faults_slow_drop_and_cut() {
    let Some((lab, _dir)) = lab().await else {
        return;
    };
    let b = lab.add_host("b").await.unwrap();
    let link = b.link().unwrap();
    let address = b.address().unwrap().to_string();

    // 2 MB at 8 Mbit/s takes 2 s at least, whatever else the machine does.
    link.limit_rate(8).await.unwrap();
    assert!(link.describe().await.unwrap().contains("tbf"));
    let started = Instant::now();
    let said = b
        .check(&["sh", "-c", "head -c 2000000 /dev/zero"])
        .await
        .unwrap();
    assert_eq!(said.len(), 2_000_000);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "2 MB in {took:?} through 8 Mbit/s"
    );

    // Every packet lost: nothing gets through; none: all does.
    link.lose(100.0).await.unwrap();
    assert!(!reachable(&address).await);
    link.lose(0.0).await.unwrap();
    assert!(reachable(&address).await);

    link.down().await.unwrap();
    assert!(!reachable(&address).await);
    link.up().await.unwrap();
    assert!(reachable(&address).await);

    match link.delay(50).await {
        Ok(()) => assert!(link.describe().await.unwrap().contains("netem")),
        Err(error @ Error::Unsupported { .. }) => {
            assert!(error.to_string().contains("netem"), "{error}");
            eprintln!("no delay here: {error}");
        }
        Err(other) => panic!("{other}"),
    }
    link.clear().await.unwrap();
    assert!(!link.describe().await.unwrap().contains("tbf"));
    assert_eq!(b.check(&["echo", "back"]).await.unwrap(), "back\n");
    assert!(link.lose(120.0).await.is_err());
}

/// Where the child of the SIGKILL test writes what it made.
const CHILD_DIR: &str = "VIRTEST_LAB_CHILD_DIR";

/// Not a test of its own: the process the next test kills. It makes a
/// lab, a host and a process there, says so, and waits to be killed.
#[tokio::test]
async fn child_holding_a_lab() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let lab = Lab::new(&dir.join("lab")).await.unwrap();
    let b = lab.add_host("b").await.unwrap();
    let pid_file = b.runtime_dir().unwrap().join("sleep.pid");
    let seconds = marker(303);
    let _sleep = b
        .spawn(
            &["sleep", &seconds],
            &pid_file,
            Stdio::null(),
            Stdio::null(),
        )
        .unwrap();
    read_pid(&b, &pid_file).await;
    let test_side = format!("vtlab{}", lab.range().split('.').nth(2).unwrap());
    std::fs::write(dir.join("made"), format!("{seconds} {test_side}\n")).unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
}

#[test]
fn a_sigkilled_owner_leaves_no_namespace_link_sshd_or_process() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: simulated hosts need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_holding_a_lab",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let made = dir.path().join("made");
    assert!(
        eventually(Duration::from_secs(60), || std::fs::read_to_string(&made)
            .is_ok_and(|t| t.ends_with('\n'))),
        "the child made no lab"
    );
    let text = std::fs::read_to_string(&made).unwrap();
    let (seconds, test_side) = text.trim().split_once(' ').unwrap();
    let sleeping = || processes_with(&format!("sleep\0{seconds}"));
    let sshd_config = dir.path().join("lab/b/sshd_config");
    assert!(!sleeping().is_empty(), "the sleep and its watchdog run");
    assert!(!processes_with(&sshd_config.to_string_lossy()).is_empty());
    assert!(Path::new("/sys/class/net").join(test_side).exists());

    let killed = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();
    // The sessions' sshd processes rename themselves (`sshd: root@notty`):
    // any process left in host b's namespaces would hold its link's end.
    let gone = || {
        sleeping().is_empty()
            && processes_with(&sshd_config.to_string_lossy()).is_empty()
            && !Path::new("/sys/class/net").join(test_side).exists()
    };
    assert!(
        eventually(Duration::from_secs(10), gone),
        "left: sleep {:?}, sshd {:?}, link {}",
        sleeping(),
        processes_with(&sshd_config.to_string_lossy()),
        Path::new("/sys/class/net").join(test_side).exists()
    );
    eprintln!("all gone {:?} after the SIGKILL", killed.elapsed());
}

/// A hosts.toml entry takes the real-host path (the user's ssh config,
/// its own QEMU and directories) to a simulated host's sshd.
#[tokio::test]
async fn a_hosts_file_reaches_its_hosts_and_says_what_is_wrong() {
    let Some((lab, dir)) = lab().await else {
        return;
    };
    let b = lab.add_host("b").await.unwrap();
    let lab_dir = dir.path().join("lab");
    let entry = |qemu: &str| {
        format!(
            "[hosts.b]\naddress = \"{}\"\nuser = \"root\"\nkey = \"{}\"\nknown_hosts = \"{}\"\nqemu = \"{qemu}\"\nstorage = \"{}\"\nruntime = \"{}\"\n",
            b.address().unwrap(),
            lab_dir.join("id_ed25519").display(),
            lab_dir.join("known_hosts").display(),
            dir.path().join("real-b-storage").display(),
            dir.path().join("real-b-run").display(),
        )
    };
    let path = dir.path().join("hosts.toml");
    let qemu = which(&qemu());
    std::fs::write(&path, entry(&qemu.to_string_lossy())).unwrap();
    let file = virtest_host::HostsFile::load(&path).unwrap();
    let real_b = file.connect("b", dir.path()).await.unwrap();
    assert_eq!(real_b.qemu(), Some(qemu.as_path()));
    assert!(real_b.link().is_none(), "a real host's link is not ours");
    assert!(dir.path().join("real-b-storage").is_dir());
    let said = real_b.check(&["ip", "-brief", "address"]).await.unwrap();
    assert!(said.contains(b.address().unwrap()), "{said}");

    let error = file.connect("c", dir.path()).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("names no host `c` (it names: b)"),
        "{error}"
    );

    std::fs::write(&path, entry("/nonexistent/qemu-system-x86_64")).unwrap();
    let file = virtest_host::HostsFile::load(&path).unwrap();
    let error = file.connect("b", dir.path()).await.unwrap_err();
    assert!(matches!(error, Error::NoQemu { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("host `b` has no QEMU at `/nonexistent/"),
        "{error}"
    );
}

/// `program`'s path, as the shell finds it.
fn which(program: &str) -> PathBuf {
    let out = std::process::Command::new("sh")
        .args(["-c", "command -v \"$1\"", "sh", program])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}
