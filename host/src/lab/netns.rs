//! A network namespace held by a process of ours: it ends when that
//! process ends, so when the test's process dies, however it dies, the
//! namespace and the veth ends in it go too (no `ip netns add` name is
//! left behind to clean).

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
    /// The namespace itself, for entering it.
    file: File,
    // Last: dropped (killed) once nothing enters the namespace.
    holder: Process,
}

impl Namespace {
    /// A new, empty network namespace for `owner` (a host's name).
    pub(crate) fn new(owner: &str) -> Result<Namespace> {
        let mut command = Command::new("sleep");
        command
            .arg("infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: unshare is async-signal-safe; nothing is allocated.
        unsafe {
            command.pre_exec(|| match libc::unshare(libc::CLONE_NEWNET) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
        // The namespace exists once the spawn returns: the child has
        // passed its `pre_exec`.
        let holder = Process::spawn(command, "netns").map_err(|source| Error::NeedsRoot {
            why: format!("a network namespace cannot be made: {source}"),
        })?;
        let path = format!("/proc/{}/ns/net", holder.pid());
        let file = File::open(&path).map_err(|source| Error::Io {
            what: "opening",
            path: path.into(),
            source,
        })?;
        Ok(Namespace {
            owner: owner.to_string(),
            file,
            holder,
        })
    }

    /// The holder's pid (`ip link ... netns PID` moves a link here).
    pub(crate) fn pid(&self) -> u32 {
        self.holder.pid()
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
