//! A network namespace held by a process of ours: it ends when that
//! process ends, so when the test's process dies, however it dies, the
//! namespace and the veth ends in it go too (no `ip netns add` name is
//! left behind to clean).
//!
//! The holder is also the first process (init) of a PID namespace of its
//! own, which what an sshd started here forks goes into: SSH sessions and
//! what they run (QEMU). When the holder dies, the kernel kills every
//! process in it at once. Without that, a session whose client vanished
//! together with the switch (no FIN ever reaches it) would live on until
//! sshd's keepalive gave up, and its QEMU with it (found by a SIGKILL
//! test under load).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::{Process, run_tool};

/// How long `ip`, `tc` or `nft` in a namespace may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(20);

/// A network namespace and the process that holds it.
#[derive(Debug)]
pub(crate) struct Namespace {
    /// Whose namespace, for messages.
    owner: String,
    /// The network namespace, for entering it.
    file: File,
    /// The PID namespace, whose init the holder's child is.
    pids: File,
    /// The init's pid (in this process's PID namespace).
    init: u32,
    // Last: dropped (killed, and its init with it) once nothing enters
    // the namespace.
    _holder: Process,
}

impl Namespace {
    /// A new, empty network namespace for `owner` (a host's name).
    pub(crate) async fn new(owner: &str) -> Result<Namespace> {
        // unshare forks the init, which it kills when it dies itself.
        let mut command = Command::new("unshare");
        command
            .args(["--net", "--pid", "--kill-child", "--", "sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let holder = Process::spawn(command, "netns").map_err(|source| Error::Spawn {
            program: "unshare".into(),
            hint: "; install util-linux",
            source,
        })?;
        let init = first_child(&holder).await.ok_or_else(|| Error::NeedsRoot {
            why: format!(
                "`unshare --net --pid` made no namespace (it exited {:?})",
                holder.status()
            ),
        })?;
        let open = |kind: &str| {
            let path = format!("/proc/{init}/ns/{kind}");
            File::open(&path).map_err(|source| Error::Io {
                what: "opening",
                path: path.into(),
                source,
            })
        };
        Ok(Namespace {
            owner: owner.to_string(),
            file: open("net")?,
            pids: open("pid")?,
            init,
            _holder: holder,
        })
    }

    /// The init's pid (`ip link ... netns PID` moves a link here).
    pub(crate) fn pid(&self) -> u32 {
        self.init
    }

    /// `program` to run inside the namespace, its children in its PID
    /// namespace (a server's sessions, and what they start).
    pub(crate) fn command_with_pids(&self, program: &str) -> Command {
        let mut command = self.command(program);
        let fd = self.pids.as_raw_fd();
        // SAFETY: setns is async-signal-safe; the fd is open until exec.
        unsafe {
            command.pre_exec(move || match libc::setns(fd, libc::CLONE_NEWPID) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
        command
    }

    /// `program` to run inside the namespace.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let fd = self.file.as_raw_fd();
        // SAFETY: setns is async-signal-safe; the fd is open until exec.
        unsafe {
            command.pre_exec(move || match libc::setns(fd, libc::CLONE_NEWNET) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
        command
    }

    /// Runs `argv` inside the namespace; a failure is an error with what
    /// it said.
    pub(crate) async fn run(&self, argv: &[&str]) -> Result<String> {
        let mut command = self.command(argv[0]);
        command.args(&argv[1..]);
        run(command, &self.owner, argv).await
    }
}

/// Runs `command` (`argv`, for messages) for host `owner`; a failure is
/// an error with what it said.
pub(crate) async fn run(command: Command, owner: &str, argv: &[&str]) -> Result<String> {
    let step = argv.join(" ");
    let output = run_tool(command, argv[0], TOOL_TIMEOUT)
        .await
        .map_err(|source| Error::Spawn {
            program: argv[0].to_string(),
            hint: hint(argv[0]),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Lab {
            host: owner.to_string(),
            step,
            said: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The first child of `holder` once it has one, unless `holder` exits
/// first or none comes within 5 s.
async fn first_child(holder: &Process) -> Option<u32> {
    let children = format!("/proc/{0}/task/{0}/children", holder.pid());
    let started = std::time::Instant::now();
    while holder.status().is_none() && started.elapsed() < Duration::from_secs(5) {
        let text = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(child) = text.split_whitespace().next().and_then(|p| p.parse().ok()) {
            return Some(child);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// Runs `argv` in the test's own namespace.
pub(crate) async fn run_here(argv: &[&str]) -> Result<String> {
    let mut command = Command::new(argv[0]);
    command.args(&argv[1..]);
    run(command, "local", argv).await
}

/// What to install for `program`.
pub(crate) fn hint(program: &str) -> &'static str {
    match program {
        "ip" => "; install iproute2 (`apt-get install iproute2`)",
        "tc" => "; install iproute2 (`apt-get install iproute2`)",
        "nft" => "; install nftables (`apt-get install nftables`)",
        "ssh-keygen" => "; install OpenSSH's client (`apt-get install openssh-client`)",
        _ => "",
    }
}
