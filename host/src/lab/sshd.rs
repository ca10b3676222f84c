//! A simulated host's sshd: its own host key, configuration and log,
//! listening on the host's address only, taking the lab's one key.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lab::netns::{self, Namespace};
use crate::process::Process;

/// Where Debian's OpenSSH server is.
pub(crate) const SSHD: &str = "/usr/sbin/sshd";

/// How long an sshd may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes an ed25519 key pair at `path` (and `path.pub`), unless there is
/// one; returns the public half's line.
pub(crate) async fn key_pair(path: &Path, owner: &str) -> Result<String> {
    let public = path.with_extension("pub");
    if !path.exists() {
        let mut command = std::process::Command::new("ssh-keygen");
        let shown = path.to_string_lossy();
        let argv = [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            owner,
            "-f",
            &shown,
        ];
        command.args(&argv[1..]);
        netns::run(command, owner, &argv).await?;
    }
    std::fs::read_to_string(&public)
        .map(|line| line.trim().to_string())
        .map_err(|source| Error::Io {
            what: "reading",
            path: public,
            source,
        })
}

/// Starts an sshd in `ns`, listening on `address`:22, its files in
/// `dir`, letting in the key whose public half is `authorized`; returns
/// it once it listens.
pub(crate) async fn start(
    ns: &Namespace,
    host: &str,
    address: &str,
    dir: &Path,
    authorized: &Path,
) -> Result<Process> {
    if !Path::new(SSHD).exists() {
        return Err(Error::Spawn {
            program: SSHD.into(),
            hint: "; install OpenSSH's server (`apt-get install openssh-server`)",
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    let host_key = dir.join("ssh_host_ed25519_key");
    key_pair(&host_key, host).await?;
    let config = dir.join("sshd_config");
    write(&config, &config_text(address, &host_key, authorized))?;
    // sshd checks for its privilege separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let log = dir.join("sshd.log");
    let log_file = std::fs::File::create(&log).map_err(|source| Error::Io {
        what: "creating",
        path: log.clone(),
        source,
    })?;
    // Its sessions go into the host's PID namespace, to die with it.
    let mut command = ns.command_with_pids(SSHD);
    command
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    let sshd = Process::spawn(command, "sshd").map_err(|source| Error::Spawn {
        program: SSHD.into(),
        hint: "",
        source,
    })?;
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Server listening")) {
            return Ok(sshd);
        }
        let failed = |said: String| Error::Lab {
            host: host.to_string(),
            step: format!("{SSHD} -D -e -f {}", config.display()),
            said,
        };
        if sshd.status().is_some() {
            return Err(failed(std::fs::read_to_string(&log).unwrap_or_default()));
        }
        if started.elapsed() > LISTEN_TIMEOUT {
            return Err(failed(format!("not listening within {LISTEN_TIMEOUT:?}")));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The server's configuration: this address only, this key only, no
/// PAM, and unix socket forwards that replace a stale socket.
fn config_text(address: &str, host_key: &Path, authorized: &Path) -> String {
    format!(
        "ListenAddress {address}:22\n\
         HostKey {}\n\
         AuthorizedKeysFile {}\n\
         PidFile none\n\
         UsePAM no\n\
         StrictModes no\n\
         PermitRootLogin prohibit-password\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         AllowTcpForwarding yes\n\
         AllowStreamLocalForwarding yes\n\
         StreamLocalBindUnlink yes\n\
         ClientAliveInterval 5\n\
         ClientAliveCountMax 6\n\
         MaxSessions 100\n\
         MaxStartups 100\n\
         PrintMotd no\n\
         LogLevel INFO\n",
        host_key.display(),
        authorized.display()
    )
}

fn write(path: &Path, text: &str) -> Result<PathBuf> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        what: "writing",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(path.to_path_buf())
}
