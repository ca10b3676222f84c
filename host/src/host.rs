//! [`Host`]: where a QEMU runs, this machine or one reached over SSH,
//! with one interface for both: run a command, start a process that dies
//! with the test, and reach its sockets from here.

use std::any::Any;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result, stdout_of, succeeded};
use crate::link::Link;
use crate::process::{Process, ToolOutput, run_tool};
use crate::relay::TcpRelay;
use crate::ssh::Ssh;

/// How long a short command on this machine may take.
const LOCAL_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A place a QEMU runs. Cheap to clone: clones are the same host, and
/// the host (its connection, a simulated host's namespace and sshd)
/// lives until the last clone is dropped.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use virtest_host::Host;
/// let here = Host::local();
/// assert!(here.is_local());
/// let said = here.check(&["echo", "hello"]).await.unwrap();
/// assert_eq!(said, "hello\n");
/// # });
/// ```
#[derive(Clone)]
pub struct Host(Arc<Inner>);

struct Inner {
    name: String,
    place: Place,
    address: Option<String>,
    runtime_dir: Option<PathBuf>,
    storage_dir: Option<PathBuf>,
    qemu: Option<PathBuf>,
    link: Option<Link>,
    /// What keeps a simulated host alive (its namespace and sshd),
    /// dropped after the connection.
    _parts: Option<Box<dyn Any + Send + Sync>>,
}

enum Place {
    Local,
    Ssh(Box<Ssh>),
}

/// What a host is made of, for [`Host::over_ssh`].
#[derive(Debug, Clone, Default)]
pub struct HostDirs {
    /// Where QEMU's sockets and pid files go on the host (short: a unix
    /// socket's path holds 108 bytes).
    pub runtime_dir: PathBuf,
    /// The host's own storage directory (hosts.toml's `storage`), where
    /// the files of the VMs it runs are copied. `None`: its storage is
    /// shared with this machine, which it sees at the same paths.
    pub storage_dir: Option<PathBuf>,
    /// The QEMU binary there (`None`: the one this machine would use,
    /// looked up by name on the host).
    pub qemu: Option<PathBuf>,
}

/// Hosts are equal when they are the same host ([`Host::same`]).
impl PartialEq for Host {
    fn eq(&self, other: &Host) -> bool {
        self.same(other)
    }
}

impl Eq for Host {}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("name", &self.0.name)
            .field("address", &self.0.address)
            .finish()
    }
}

impl Host {
    /// This machine, the test's own.
    pub fn local() -> Host {
        Host::local_at(None)
    }

    /// This machine, reached by other hosts at `address` (a simulated
    /// host's way back to the test's side).
    pub fn local_at(address: Option<String>) -> Host {
        Host(Arc::new(Inner {
            name: "local".into(),
            place: Place::Local,
            address,
            runtime_dir: None,
            storage_dir: None,
            qemu: None,
            link: None,
            _parts: None,
        }))
    }

    /// A host behind the SSH connection `ssh`, reached by other hosts at
    /// `address`, with its directories made there (mode 0700). `parts`
    /// is kept as long as the host: what it runs on, for a simulated one.
    pub async fn over_ssh(
        ssh: Ssh,
        address: String,
        dirs: HostDirs,
        link: Option<Link>,
        parts: Option<Box<dyn Any + Send + Sync>>,
    ) -> Result<Host> {
        let mut made = vec![dirs.runtime_dir.to_string_lossy().into_owned()];
        made.extend(
            dirs.storage_dir
                .iter()
                .map(|d| d.to_string_lossy().into_owned()),
        );
        ssh.check(
            &[
                &["mkdir", "-p", "-m", "700"][..],
                &made.iter().map(String::as_str).collect::<Vec<_>>(),
            ]
            .concat(),
        )
        .await?;
        Ok(Host(Arc::new(Inner {
            name: ssh.name().to_string(),
            place: Place::Ssh(Box::new(ssh)),
            address: Some(address),
            runtime_dir: Some(dirs.runtime_dir),
            storage_dir: dirs.storage_dir,
            qemu: dirs.qemu,
            link,
            _parts: parts,
        })))
    }

    /// Its name (`local` for this machine).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Whether it is this machine.
    pub fn is_local(&self) -> bool {
        matches!(self.0.place, Place::Local)
    }

    /// Whether both are the same host.
    pub fn same(&self, other: &Host) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.is_local() && other.is_local())
    }

    /// The address other hosts reach it at, where it has one.
    pub fn address(&self) -> Option<&str> {
        self.0.address.as_deref()
    }

    /// Where QEMU's sockets go there (`None` on this machine: the
    /// caller's own).
    pub fn runtime_dir(&self) -> Option<&Path> {
        self.0.runtime_dir.as_deref()
    }

    /// Its own storage, where the files of the VMs it runs are copied
    /// (`None` on this machine, and on a host whose storage is shared).
    pub fn storage_dir(&self) -> Option<&Path> {
        self.0.storage_dir.as_deref()
    }

    /// Whether it sees this machine's files at their paths: it is this
    /// machine, or its storage is shared.
    pub fn sees_local_files(&self) -> bool {
        self.0.storage_dir.is_none()
    }

    /// The QEMU binary it names, if any.
    pub fn qemu(&self) -> Option<&Path> {
        self.0.qemu.as_deref()
    }

    /// Its network link, for a simulated host: faults are made there.
    pub fn link(&self) -> Option<&Link> {
        self.0.link.as_ref()
    }

    /// Runs `argv` there; what it said, whatever its exit status.
    pub async fn run<S: AsRef<str>>(&self, argv: &[S]) -> Result<ToolOutput> {
        match &self.0.place {
            Place::Ssh(ssh) => ssh.run(argv).await,
            Place::Local => {
                let program = argv.first().map_or("", |a| a.as_ref());
                let mut command = Command::new(program);
                command.args(argv.iter().skip(1).map(AsRef::as_ref));
                run_tool(command, program, LOCAL_COMMAND_TIMEOUT)
                    .await
                    .map_err(|source| match source.kind() {
                        std::io::ErrorKind::TimedOut => Error::Timeout {
                            host: self.name().into(),
                            what: format!(
                                "`{}`",
                                shell_words::join(argv.iter().map(AsRef::as_ref))
                            ),
                            after: LOCAL_COMMAND_TIMEOUT,
                        },
                        _ => Error::Spawn {
                            program: program.into(),
                            hint: "",
                            source,
                        },
                    })
            }
        }
    }

    /// Runs `argv` there and returns its stdout; a failure is an error
    /// with its stderr.
    pub async fn check<S: AsRef<str>>(&self, argv: &[S]) -> Result<String> {
        if let Place::Ssh(ssh) = &self.0.place {
            return ssh.check(argv).await;
        }
        let output = self.run(argv).await?;
        stdout_of(self.name(), argv, output)
    }

    /// The SHA-256 of file `path` there (lowercase hex), from its
    /// `sha256sum`.
    pub async fn sha256(&self, path: &Path) -> Result<String> {
        let said = self
            .check(&["sha256sum", "--", &path.to_string_lossy()])
            .await?;
        match said.split_whitespace().next() {
            Some(sum) if sum.len() == 64 => Ok(sum.to_string()),
            _ => Err(Error::Command {
                host: self.name().into(),
                command: format!("sha256sum -- {}", path.display()),
                status: std::process::ExitStatus::default(),
                stderr: format!("it said `{}`, not a SHA-256", said.trim()),
            }),
        }
    }

    /// Copies the file `local` here to `there` on the host, within
    /// `deadline`, and checks it arrived whole: its SHA-256 there must be
    /// `sha256`. It arrives under a temporary name and is renamed, so
    /// `there` is whole or absent, also when two copy at once.
    pub async fn copy_in(
        &self,
        local: &Path,
        there: &Path,
        sha256: &str,
        deadline: Duration,
    ) -> Result<()> {
        let Place::Ssh(ssh) = &self.0.place else {
            let io = |source| Error::Io {
                what: "copying to",
                path: there.to_path_buf(),
                source,
            };
            let part = part_name(there);
            std::fs::copy(local, &part).map_err(io)?;
            return std::fs::rename(&part, there).map_err(io);
        };
        let argv = ["sh", "-c", COPY_IN, "sh", &there.to_string_lossy(), sha256];
        let output = ssh.run_fed(&argv, local, deadline).await?;
        stdout_of(
            self.name(),
            &[format!(
                "copying {} to {}",
                local.display(),
                there.display()
            )],
            output,
        )
        .map(drop)
    }

    /// Which of `paths` are there, asked in one command.
    pub async fn present(&self, paths: &[&Path]) -> Result<HashSet<PathBuf>> {
        if paths.is_empty() {
            return Ok(HashSet::new());
        }
        let script = r#"for f; do [ -e "$f" ] && printf '%s\n' "$f"; done; true"#;
        let mut argv = vec!["sh".to_string(), "-c".into(), script.into(), "sh".into()];
        argv.extend(paths.iter().map(|p| p.to_string_lossy().into_owned()));
        let said = self.check(&argv).await?;
        Ok(said.lines().map(PathBuf::from).collect())
    }

    /// The bytes of file `path` there.
    pub async fn read_file(&self, path: &Path) -> Result<Vec<u8>> {
        let argv = ["cat", &path.to_string_lossy()];
        let output = self.run(&argv).await?;
        Ok(succeeded(self.name(), &argv, output)?.stdout)
    }

    /// Starts `argv` there, to end with the returned process (dropping
    /// it kills the command, on whichever host). On another host its pid
    /// there goes to `pid_file` (see [`Host::signal`]). Its stdout and
    /// stderr are the local `stdout` and `stderr`.
    pub fn spawn<S: AsRef<str>>(
        &self,
        argv: &[S],
        pid_file: &Path,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<Process> {
        match &self.0.place {
            Place::Ssh(ssh) => ssh.spawn(argv, pid_file, stdout, stderr),
            Place::Local => {
                let program = argv.first().map_or("", |a| a.as_ref());
                let mut command = Command::new(program);
                command
                    .args(argv.iter().skip(1).map(AsRef::as_ref))
                    .stdin(Stdio::null())
                    .stdout(stdout)
                    .stderr(stderr);
                Process::spawn(command, "qemu").map_err(|source| Error::Spawn {
                    program: program.into(),
                    hint: "",
                    source,
                })
            }
        }
    }

    /// Sends `signal` (`KILL`, `TERM`) to the process whose pid
    /// [`Host::spawn`] wrote to `pid_file` there.
    pub async fn signal(&self, pid_file: &Path, signal: &str) -> Result<()> {
        let pid = self
            .check(&["cat", &pid_file.to_string_lossy()])
            .await?
            .trim()
            .to_string();
        self.check(&["kill", &format!("-{signal}"), &pid]).await?;
        Ok(())
    }

    /// The path here that leads to the unix socket `there` on the host:
    /// `there` itself on this machine, else `here`, forwarded.
    pub async fn reach_socket(&self, there: &Path, here: &Path) -> Result<PathBuf> {
        match &self.0.place {
            Place::Local => Ok(there.to_path_buf()),
            Place::Ssh(ssh) => {
                ssh.forward_local(here, there).await?;
                Ok(here.to_path_buf())
            }
        }
    }

    /// The path on the host that leads to the unix socket `here`, which
    /// a process here listens on: `here` itself on this machine, else
    /// `there`, forwarded back.
    pub async fn serve_socket(&self, here: &Path, there: &Path) -> Result<PathBuf> {
        match &self.0.place {
            Place::Local => Ok(here.to_path_buf()),
            Place::Ssh(ssh) => {
                ssh.forward_remote(there, here).await?;
                Ok(there.to_path_buf())
            }
        }
    }

    /// A TCP port on this machine's 127.0.0.1 that leads to `port` on
    /// the host's 127.0.0.1 (a guest's forwarded sshd, say): `port`
    /// itself on this machine, else a relay's through the unix socket
    /// `via`, which lives as long as the returned value.
    pub async fn reach_port(&self, port: u16, via: &Path) -> Result<ReachedPort> {
        match &self.0.place {
            Place::Local => Ok(ReachedPort { port, relay: None }),
            Place::Ssh(ssh) => {
                ssh.forward_local_tcp(via, port).await?;
                let relay = TcpRelay::start(via).map_err(|source| Error::Io {
                    what: "listening for a relay to",
                    path: via.to_path_buf(),
                    source,
                })?;
                Ok(ReachedPort {
                    port: relay.port(),
                    relay: Some(relay),
                })
            }
        }
    }
}

/// The script that receives a file on its stdin, as `$1`, checked to
/// have the SHA-256 `$2` (hashed as it arrives, not read again).
const COPY_IN: &str = r#"set -e
part="$1.part.$$"
trap 'rm -f "$part"' EXIT
sum=$(tee "$part" | sha256sum | cut -d' ' -f1)
if [ "$sum" != "$2" ]; then
    echo "it arrived with SHA-256 $sum, not $2" >&2
    exit 1
fi
mv "$part" "$1"
"#;

/// A temporary name beside `path`, of this process.
fn part_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".part.{}", std::process::id()));
    PathBuf::from(name)
}

/// A port here that leads to one on a host; the relay, if any, ends when
/// it is dropped.
#[derive(Debug)]
pub struct ReachedPort {
    /// The port on 127.0.0.1 here.
    pub port: u16,
    relay: Option<TcpRelay>,
}

impl ReachedPort {
    /// Whether it goes through a relay (the host is another).
    pub fn is_relayed(&self) -> bool {
        self.relay.is_some()
    }
}
