//! virtest-remote against OpenSSH's sshd, started by the test on
//! 127.0.0.1 with its own configuration, host key and authorized key.

use virtest_testkit as common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use virtest_remote::{Auth, Error, SshConfig, SshSession};

/// An sshd of our own, killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen is installed (see .ci/install)");
    assert!(status.success());
}

impl Sshd {
    fn start() -> Sshd {
        Sshd::start_with(None)
    }

    /// With a password, sshd runs in a private mount namespace where root
    /// has that password: a copy of /etc/shadow is bind-mounted over the
    /// real one for sshd alone, and the host's accounts are untouched.
    fn start_with(root_password: Option<&str>) -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        keygen(&p("host_key"));
        keygen(&p("client_key"));
        std::fs::copy(p("client_key.pub"), p("authorized_keys")).unwrap();
        let port = common::free_port();
        let user = whoami();
        let (passwords, root_login) = match root_password {
            Some(_) => ("yes", "yes"),
            None => ("no", "prohibit-password"),
        };
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication {passwords}\nPermitRootLogin {root_login}\n\
             AllowUsers {user}\nLogLevel ERROR\n",
            p("host_key").display(),
            p("authorized_keys").display(),
            p("sshd.pid").display(),
        );
        std::fs::write(p("sshd_config"), config).unwrap();
        // sshd needs its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").ok();
        let sshd = format!("/usr/sbin/sshd -D -e -f {}", p("sshd_config").display());
        let mut command = match root_password {
            None => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("exec {sshd}")]);
                c
            }
            Some(password) => {
                assert_eq!(
                    user, "root",
                    "the password test needs root, for a private mount namespace"
                );
                let hash = Command::new("openssl")
                    .args(["passwd", "-6", password])
                    .output()
                    .unwrap()
                    .stdout;
                let hash = String::from_utf8(hash).unwrap().trim().to_string();
                let shadow = std::fs::read_to_string("/etc/shadow").unwrap();
                let ours: String = shadow
                    .lines()
                    .map(|l| match l.strip_prefix("root:") {
                        Some(rest) => {
                            format!("root:{hash}:{}\n", rest.split_once(':').map_or("", |r| r.1))
                        }
                        None => format!("{l}\n"),
                    })
                    .collect();
                std::fs::write(p("shadow"), ours).unwrap();
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(format!(
                        "mount --bind {} /etc/shadow && exec {sshd}",
                        p("shadow").display()
                    ));
                c
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("OpenSSH's sshd is installed (see .ci/install)");
        Sshd { child, port, dir }
    }

    fn config(&self, auth: Auth) -> SshConfig {
        let host_key = std::fs::read_to_string(self.dir.path().join("host_key.pub")).unwrap();
        SshConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], self.port)),
            user: whoami(),
            auth,
            known_host_keys: vec![host_key.trim().to_string()],
        }
    }
}

fn whoami() -> String {
    String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test]
async fn key_login_commands_and_transfers_work_against_openssh() {
    let sshd = Sshd::start();
    let key = Auth::KeyFile(sshd.dir.path().join("client_key"));
    let ssh = SshSession::wait_for_login(&sshd.config(key), Duration::from_secs(20))
        .await
        .unwrap();
    let r = ssh.run("echo out; echo err >&2").await.unwrap();
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("out\n", "err\n"));
    let err = ssh.run("exit 42").await.unwrap_err();
    assert!(
        matches!(&err, Error::Exit(r) if r.exit_status == 42),
        "{err}"
    );
    let big = ssh
        .run("head -c 10485760 /dev/zero | tr '\\0' y")
        .await
        .unwrap();
    assert_eq!(big.stdout.len(), 10 << 20);

    // A key in memory, and a file round trip through OpenSSH.
    let text = std::fs::read_to_string(sshd.dir.path().join("client_key")).unwrap();
    let ssh = SshSession::connect(&sshd.config(Auth::Key(text)), Duration::from_secs(10))
        .await
        .unwrap();
    let remote = sshd.dir.path().join("remote-copy");
    ssh.send_file(
        &sshd.dir.path().join("authorized_keys"),
        &remote.to_string_lossy(),
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read(&remote).unwrap(),
        std::fs::read(sshd.dir.path().join("authorized_keys")).unwrap()
    );
}

#[tokio::test]
async fn a_key_the_server_does_not_know_is_refused_at_once() {
    let sshd = Sshd::start();
    let stranger = sshd.dir.path().join("stranger");
    keygen(&stranger);
    let start = std::time::Instant::now();
    let err = SshSession::wait_for_login(
        &sshd.config(Auth::KeyFile(stranger)),
        Duration::from_secs(20),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Auth {
                method: "key file",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn password_login_works_against_openssh_and_a_wrong_one_is_refused() {
    let sshd = Sshd::start_with(Some("correct horse"));
    let ssh = SshSession::wait_for_login(
        &sshd.config(Auth::Password("correct horse".into())),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(ssh.run("id -u").await.unwrap().stdout, "0\n");
    let start = std::time::Instant::now();
    let err = SshSession::wait_for_login(
        &sshd.config(Auth::Password("battery staple".into())),
        Duration::from_secs(20),
    )
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
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    // The host's own root entry was never changed.
    let root_line = |text: String| {
        text.lines()
            .find(|l| l.starts_with("root:"))
            .unwrap()
            .to_string()
    };
    let ours = root_line(std::fs::read_to_string(sshd.dir.path().join("shadow")).unwrap());
    assert_ne!(
        root_line(std::fs::read_to_string("/etc/shadow").unwrap()),
        ours
    );
}
