//! A host reached over OpenSSH: one master connection (`ControlMaster`)
//! that every command, long-running process and socket forward to the
//! host shares, so each costs a channel, not a handshake.
//!
//! The master is a process of this one ([`Process`]): it dies with it,
//! and with it every session on the host ends. A long-running command
//! ([`Ssh::spawn`]) runs under a watchdog that kills it when its session's
//! stdin closes, so nothing started over SSH outlives the test, even
//! after a SIGKILL.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result, stdout_of};
use crate::process::{Process, ToolOutput, run_tool, run_tool_fed};

/// How long a short command on a host (a forward, `kill`, `mkdir`) may
/// take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The shell script a long-running remote command runs under: it starts
/// the command with stdin closed, writes its pid to `$1`, and kills it
/// when the session's stdin reaches its end (the connection or the local
/// client is gone). The command's exit status is the script's. dash
/// gives an asynchronous list `/dev/null` for stdin even with `<&0`, so
/// the session's stdin is passed on as fd 3.
const WATCHDOG: &str = r#"pid_file=$1; shift
exec 3<&0
"$@" </dev/null 3<&- &
command=$!
echo "$command" > "$pid_file"
{ cat >/dev/null; kill -KILL "$command" 2>/dev/null; } <&3 >/dev/null 2>&1 &
watchdog=$!
exec 3<&-
wait "$command"
status=$?
kill "$watchdog" 2>/dev/null
exit "$status""#;

/// Where and as whom to log into a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The host's name, for messages.
    pub name: String,
    /// Its address or DNS name.
    pub address: String,
    /// Its SSH port.
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// The private key to offer (and only it).
    pub key: PathBuf,
    /// A known_hosts file holding the host's key (`None`: the user's
    /// own). The key is always checked.
    pub known_hosts: Option<PathBuf>,
    /// Read the user's `~/.ssh/config` (a `ProxyJump`, say): on for real
    /// hosts, off for simulated ones.
    pub user_config: bool,
}

impl SshTarget {
    /// `user@address:port`, for messages.
    pub fn display(&self) -> String {
        format!("{}@{}:{}", self.user, self.address, self.port)
    }
}

/// A master connection to a host, and what runs through it.
#[derive(Debug)]
pub struct Ssh {
    target: SshTarget,
    control: PathBuf,
    log: PathBuf,
    master: Process,
}

impl Ssh {
    /// Logs into `target` within `deadline`, keeping the master's log
    /// (`ssh-<name>.log`) in `dir`. Its control socket goes in the
    /// system's temporary directory, where its path stays short (a unix
    /// socket's holds 108 bytes).
    ///
    /// A refused key, an unknown host key and an unreachable address
    /// are told apart in the error, with what OpenSSH said.
    pub async fn connect(target: SshTarget, dir: &Path, deadline: Duration) -> Result<Ssh> {
        let control = control_path();
        let log = dir.join(format!("ssh-{}.log", target.name));
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { what, path, source }
        };
        let log_file = std::fs::File::create(&log).map_err(io("creating", &log))?;
        let mut command = Command::new("ssh");
        command
            .args(["-M", "-N", "-o", "ControlPersist=no"])
            .args(["-o", "ExitOnForwardFailure=yes"])
            .arg("-o")
            .arg(format!("ConnectTimeout={}", deadline.as_secs().max(1)))
            .args(options(&target, &control))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let master = Process::spawn(command, "ssh-master").map_err(|source| Error::Spawn {
            program: "ssh".into(),
            hint: "; install OpenSSH's client (`apt-get install openssh-client`)",
            source,
        })?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            // The master binds the socket under another name and renames
            // it once it listens: its presence means logged in.
            if control.exists() {
                break;
            }
            if master.status().is_some() {
                return Err(login_error(&target, &read_log(&log)));
            }
            if started.elapsed() > deadline {
                return Err(Error::Unreachable {
                    address: target.display(),
                    said: format!("no login within {deadline:?}"),
                    host: target.name,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        tracing::debug!(host = %target.name, after = ?started.elapsed(), "SSH master connected");
        Ok(Ssh {
            target,
            control,
            log,
            master,
        })
    }

    /// The host's name.
    pub fn name(&self) -> &str {
        &self.target.name
    }

    /// Where and as whom it is logged in.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// A client of the master running `argv` on the host (quoted for its
    /// shell), not yet started.
    pub fn command<S: AsRef<str>>(&self, argv: &[S]) -> Command {
        let mut command = Command::new("ssh");
        command
            .arg("-T")
            .args(options(&self.target, &self.control))
            .arg("--")
            .arg(shell_words::join(argv.iter().map(AsRef::as_ref)));
        command
    }

    /// Runs `argv` on the host and returns what it said, whatever its
    /// exit status; a lost connection is an error.
    pub async fn run<S: AsRef<str>>(&self, argv: &[S]) -> Result<ToolOutput> {
        self.check_connected()?;
        let shown = shell_words::join(argv.iter().map(AsRef::as_ref));
        let output = run_tool(self.command(argv), "ssh", COMMAND_TIMEOUT)
            .await
            .map_err(|e| self.tool_error(&shown, e))?;
        // 255 is OpenSSH's own failure: the connection, not the command.
        if output.status.code() == Some(255) && self.master.status().is_some() {
            return Err(self.disconnected());
        }
        Ok(output)
    }

    /// Runs `argv` on the host reading the local file `input` on its
    /// stdin, within `deadline`, and returns what it said.
    pub async fn run_fed<S: AsRef<str>>(
        &self,
        argv: &[S],
        input: &Path,
        deadline: Duration,
    ) -> Result<ToolOutput> {
        self.check_connected()?;
        let shown = shell_words::join(argv.iter().map(AsRef::as_ref));
        let file = std::fs::File::open(input).map_err(|source| Error::Io {
            what: "opening",
            path: input.to_path_buf(),
            source,
        })?;
        let output = run_tool_fed(self.command(argv), "ssh", deadline, file.into())
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::TimedOut => Error::Timeout {
                    host: self.target.name.clone(),
                    what: format!("`{shown}`"),
                    after: deadline,
                },
                _ => self.tool_error(&shown, e),
            })?;
        if output.status.code() == Some(255) && self.master.status().is_some() {
            return Err(self.disconnected());
        }
        Ok(output)
    }

    /// Runs `argv` on the host and returns its stdout; a failure is an
    /// error with its stderr.
    pub async fn check<S: AsRef<str>>(&self, argv: &[S]) -> Result<String> {
        let output = self.run(argv).await?;
        stdout_of(&self.target.name, argv, output)
    }

    /// Starts `argv` on the host for as long as the returned process
    /// lives (see the module's documentation), writing its pid on the
    /// host to `pid_file` there. Its stdout and stderr are the local
    /// `stdout` and `stderr`; its exit status is the process's.
    pub fn spawn<S: AsRef<str>>(
        &self,
        argv: &[S],
        pid_file: &Path,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<Process> {
        self.check_connected()?;
        let mut wrapped = vec![
            "sh".to_string(),
            "-c".into(),
            WATCHDOG.into(),
            "sh".into(),
            pid_file.to_string_lossy().into_owned(),
        ];
        wrapped.extend(argv.iter().map(|a| a.as_ref().to_string()));
        let mut command = self.command(&wrapped);
        command.stdin(Stdio::piped()).stdout(stdout).stderr(stderr);
        Process::spawn(command, "ssh-client").map_err(|source| Error::Spawn {
            program: "ssh".into(),
            hint: "",
            source,
        })
    }

    /// Makes the local unix socket `local` lead to the host's unix
    /// socket `remote` (`ssh -L`): each connection to it is a connection
    /// there, made when it is made.
    pub async fn forward_local(&self, local: &Path, remote: &Path) -> Result<()> {
        let _ = std::fs::remove_file(local);
        self.forward("-L", format!("{}:{}", local.display(), remote.display()))
            .await
    }

    /// Makes the local unix socket `local` lead to TCP port `port` on
    /// the host's 127.0.0.1.
    pub async fn forward_local_tcp(&self, local: &Path, port: u16) -> Result<()> {
        let _ = std::fs::remove_file(local);
        self.forward("-L", format!("{}:127.0.0.1:{port}", local.display()))
            .await
    }

    /// Makes the host's unix socket `remote` lead to the local unix
    /// socket `local` (`ssh -R`).
    pub async fn forward_remote(&self, remote: &Path, local: &Path) -> Result<()> {
        self.forward("-R", format!("{}:{}", remote.display(), local.display()))
            .await
    }

    async fn forward(&self, kind: &str, spec: String) -> Result<()> {
        self.check_connected()?;
        let mut command = Command::new("ssh");
        command
            .args(["-O", "forward", kind, &spec])
            .args(options(&self.target, &self.control));
        let shown = format!("ssh -O forward {kind} {spec}");
        let output = run_tool(command, "ssh", COMMAND_TIMEOUT)
            .await
            .map_err(|e| self.tool_error(&shown, e))?;
        stdout_of(&self.target.name, &[shown], output).map(drop)
    }

    /// Whether the master connection still runs.
    pub fn is_connected(&self) -> bool {
        self.master.status().is_none()
    }

    fn check_connected(&self) -> Result<()> {
        match self.is_connected() {
            true => Ok(()),
            false => Err(self.disconnected()),
        }
    }

    fn disconnected(&self) -> Error {
        let said = read_log(&self.log);
        Error::Disconnected {
            host: self.target.name.clone(),
            said: match said.is_empty() {
                true => "the master connection exited".into(),
                false => said,
            },
        }
    }

    fn tool_error(&self, command: &str, source: std::io::Error) -> Error {
        match source.kind() {
            std::io::ErrorKind::TimedOut => Error::Timeout {
                host: self.target.name.clone(),
                what: format!("`{command}`"),
                after: COMMAND_TIMEOUT,
            },
            _ => Error::Spawn {
                program: "ssh".into(),
                hint: "",
                source,
            },
        }
    }
}

impl Drop for Ssh {
    fn drop(&mut self) {
        self.master.kill_and_reap();
        let _ = std::fs::remove_file(&self.control);
    }
}

/// A fresh control socket path, `<tmp>/vtssh-<pid>-<n>.sock`. The first
/// call of a process removes the sockets of processes that are gone
/// (SIGKILLed ones leave theirs).
fn control_path() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static SWEPT: Once = Once::new();
    let dir = std::env::temp_dir();
    SWEPT.call_once(|| {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let owner = name
                .strip_prefix("vtssh-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            if let Some(owner) = owner
                && !Path::new(&format!("/proc/{owner}")).exists()
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("vtssh-{}-{n}.sock", std::process::id()))
}

/// The options every ssh of `target` takes, ending with the destination.
fn options(target: &SshTarget, control: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut option = |value: String| {
        args.push("-o".into());
        args.push(value.into());
    };
    option(format!("ControlPath={}", control.display()));
    option("BatchMode=yes".into());
    option("StrictHostKeyChecking=yes".into());
    option("IdentitiesOnly=yes".into());
    option(format!("IdentityFile={}", target.key.display()));
    option("ServerAliveInterval=5".into());
    option("ServerAliveCountMax=6".into());
    option("LogLevel=ERROR".into());
    if let Some(known_hosts) = &target.known_hosts {
        option(format!("UserKnownHostsFile={}", known_hosts.display()));
        option("GlobalKnownHostsFile=/dev/null".into());
    }
    if !target.user_config {
        args.extend(["-F".into(), "/dev/null".into()]);
    }
    args.extend([
        "-p".into(),
        target.port.to_string().into(),
        "-l".into(),
        target.user.clone().into(),
        target.address.clone().into(),
    ]);
    args
}

/// The error for a master that exited before logging in, from what it
/// said.
fn login_error(target: &SshTarget, said: &str) -> Error {
    let said = match said.is_empty() {
        true => "ssh exited without a word".to_string(),
        false => said.to_string(),
    };
    if said.contains("Permission denied") || said.contains("Too many authentication failures") {
        Error::Auth {
            host: target.name.clone(),
            user: target.user.clone(),
            key: target.key.clone(),
            said,
        }
    } else if said.contains("Host key verification failed")
        || said.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || said.contains("No ED25519 host key is known")
        || said.contains("host key is known")
    {
        Error::HostKey {
            host: target.name.clone(),
            said,
        }
    } else {
        Error::Unreachable {
            host: target.name.clone(),
            address: target.display(),
            said,
        }
    }
}

/// The last lines of the master's log.
fn read_log(log: &Path) -> String {
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open(log) {
        let _ = file.take(1 << 16).read_to_string(&mut text);
    }
    tail(&text)
}

/// The last 10 non-empty lines of `text`, joined by "; ".
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(10)..].join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SshTarget {
        SshTarget {
            name: "b".into(),
            address: "10.0.0.2".into(),
            port: 22,
            user: "root".into(),
            key: "/k".into(),
            known_hosts: None,
            user_config: true,
        }
    }

    #[test]
    fn login_failures_are_told_apart() {
        let t = target();
        assert!(matches!(
            login_error(&t, "root@10.0.0.2: Permission denied (publickey)."),
            Error::Auth { .. }
        ));
        assert!(matches!(
            login_error(
                &t,
                "No ED25519 host key is known for [10.0.0.2]:22 and you have requested strict checking.\r\nHost key verification failed."
            ),
            Error::HostKey { .. }
        ));
        let error = login_error(
            &t,
            "ssh: connect to host 10.0.0.2 port 22: Connection refused",
        );
        assert!(matches!(error, Error::Unreachable { .. }));
        assert!(error.to_string().contains("root@10.0.0.2:22"), "{error}");
    }

    #[test]
    fn user_config_is_read_for_real_hosts_only() {
        let control = Path::new("/run/c.sock");
        let real = options(&target(), control);
        assert!(!real.contains(&"/dev/null".into()));
        let simulated = options(
            &SshTarget {
                user_config: false,
                known_hosts: Some("/kh".into()),
                ..target()
            },
            control,
        );
        assert!(simulated.contains(&"UserKnownHostsFile=/kh".into()));
        assert_eq!(simulated.last(), Some(&"10.0.0.2".into()));
    }
}
