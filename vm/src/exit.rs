//! How a VM's QEMU ended when nobody powered it off: killed, crashed, or
//! quit by the guest.

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// A QEMU process that ended by itself (not through [`crate::Vm::power_off`]):
/// its pid and exit status, and the last line it wrote when it exited
/// with an error.
///
/// ```text
/// QEMU (pid 4242) was killed by signal 9 (SIGKILL)
/// QEMU (pid 4242) exited with status 1: qemu-system-x86_64: ... Cannot allocate memory
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuExit {
    /// QEMU's pid.
    pub pid: u32,
    /// How it ended.
    pub status: ExitStatus,
    /// The last line it wrote to stderr, when it exited with an error.
    pub last_words: Option<String>,
}

impl fmt::Display for QemuExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QEMU (pid {}) ", self.pid)?;
        match (self.status.code(), self.status.signal()) {
            (Some(0), _) => write!(f, "exited with status 0 (the guest powered off)")?,
            (Some(code), _) => write!(f, "exited with status {code}")?,
            (None, Some(signal)) => match signal_name(signal) {
                Some(name) => write!(f, "was killed by signal {signal} ({name})")?,
                None => write!(f, "was killed by signal {signal}")?,
            },
            (None, None) => write!(f, "ended ({})", self.status)?,
        }
        if self.status.core_dumped() {
            write!(f, ", dumping core")?;
        }
        match &self.last_words {
            Some(words) => write!(f, ": {words}"),
            None => Ok(()),
        }
    }
}

/// The name of the signals that end a process.
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(raw: i32, last_words: Option<&str>) -> String {
        QemuExit {
            pid: 7,
            status: ExitStatus::from_raw(raw),
            last_words: last_words.map(str::to_string),
        }
        .to_string()
    }

    #[test]
    fn says_how_qemu_ended() {
        assert_eq!(
            exit(9, None),
            "QEMU (pid 7) was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            exit(6 | 0x80, None),
            "QEMU (pid 7) was killed by signal 6 (SIGABRT), dumping core"
        );
        assert_eq!(exit(40, None), "QEMU (pid 7) was killed by signal 40");
        assert_eq!(
            exit(1 << 8, Some("qemu: cannot set up guest memory")),
            "QEMU (pid 7) exited with status 1: qemu: cannot set up guest memory"
        );
        assert_eq!(
            exit(0, None),
            "QEMU (pid 7) exited with status 0 (the guest powered off)"
        );
    }
}
