//! The host-side endpoints of a QEMU process: its sockets, as its
//! command line names them, and the ports it forwards to the guest.

use std::path::{Path, PathBuf};

use virtest_qemu_cmdline::{Endpoint, HostFwd, PropsOption, QemuCmdline};

/// The host-side endpoints of one QEMU process, as its command line
/// names them: on the host QEMU runs on (see [`crate::Instance::host`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The QMP socket QEMU listens on.
    pub qmp_socket: PathBuf,
    /// The socket QEMU connects its serial console to.
    pub console_socket: PathBuf,
    /// The socket QEMU serves the guest agent's channel on.
    pub agent_socket: PathBuf,
    /// The control socket of the VM's TPM emulator (swtpm), which QEMU
    /// connects to, for a VM with a TPM.
    pub tpm_socket: PathBuf,
    /// Which of the VM's QEMU processes these are for (1, 2, ...): names
    /// the sockets, and the copies of host paths the command line has of
    /// its own (see [`Endpoints::remap_to`]).
    pub generation: u32,
    /// The TCP ports QEMU forwards from 127.0.0.1 to the guest, as QEMU
    /// bound them once it runs: the command line asks for port 0, so
    /// QEMU chooses (nothing picks a free port and hands it over, which
    /// another process could take in between). On another host, each is
    /// the port here that leads to QEMU's there.
    pub forwards: Vec<Forward>,
}

impl Endpoints {
    /// How a migration's destination, whose endpoints are `to`, gets a
    /// fresh copy of each host endpoint these hold, whatever the command
    /// line has: the VM's sockets are `to`'s; any other path (a socket or
    /// log of the user's `extra_args`) gets `to`'s generation in its name
    /// (`extra.sock` becomes `extra.g2.sock`); any host port becomes 0,
    /// so QEMU chooses one (a forward's is then read back, and
    /// [`crate::Vm::forwarded_port`] tells it).
    ///
    /// ```
    /// # use std::path::PathBuf;
    /// use virtest_qemu_cmdline::Endpoint;
    /// use virtest_vm::Endpoints;
    /// let at = |generation: u32| Endpoints {
    ///     qmp_socket: format!("/run/vm/qmp-{generation}.sock").into(),
    ///     console_socket: format!("/run/vm/console-{generation}.sock").into(),
    ///     agent_socket: format!("/run/vm/agent-{generation}.sock").into(),
    ///     tpm_socket: format!("/run/vm/tpm-{generation}.sock").into(),
    ///     generation,
    ///     forwards: Vec::new(),
    /// };
    /// let (from, to) = (at(1), at(2));
    /// let mut remap = from.remap_to(&to);
    /// assert_eq!(remap(Endpoint::Path(from.qmp_socket.clone())), Endpoint::Path(to.qmp_socket.clone()));
    /// assert_eq!(remap(Endpoint::Path("/tmp/extra.sock".into())), Endpoint::Path("/tmp/extra.g2.sock".into()));
    /// assert_eq!(remap(Endpoint::Port(5555)), Endpoint::Port(0));
    /// ```
    pub fn remap_to<'a>(&'a self, to: &'a Endpoints) -> impl FnMut(Endpoint) -> Endpoint + 'a {
        move |endpoint| match endpoint {
            Endpoint::Path(p) if p == self.qmp_socket => Endpoint::Path(to.qmp_socket.clone()),
            Endpoint::Path(p) if p == self.console_socket => {
                Endpoint::Path(to.console_socket.clone())
            }
            Endpoint::Path(p) if p == self.agent_socket => Endpoint::Path(to.agent_socket.clone()),
            Endpoint::Path(p) if p == self.tpm_socket => Endpoint::Path(to.tpm_socket.clone()),
            Endpoint::Path(p) => Endpoint::Path(generation_path(&p, to.generation)),
            Endpoint::Port(_) => Endpoint::Port(0),
        }
    }

    /// The host port forwarded to `guest_port`, if any.
    pub fn host_port(&self, guest_port: u16) -> Option<u16> {
        self.forwards
            .iter()
            .find(|f| f.guest_port == guest_port)
            .map(|f| f.host_port)
    }
}

/// One TCP port forward of QEMU's user networking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The port on 127.0.0.1.
    pub host_port: u16,
    /// The guest's port.
    pub guest_port: u16,
}

/// The guest ports of the command line's TCP forwards.
pub(crate) fn tcp_forwards(cmdline: &QemuCmdline) -> Vec<u16> {
    cmdline
        .all_props(PropsOption::Netdev)
        .flat_map(|props| props.entries())
        .filter(|(key, _)| key == "hostfwd")
        .filter_map(|(_, value)| value.as_deref()?.parse::<HostFwd>().ok())
        .filter(|rule| !rule.udp)
        .map(|rule| rule.guest_port)
        .collect()
}

/// `path` with generation `generation` in its name, in place of the one
/// it has: `extra.sock` and `extra.g1.sock` become `extra.g2.sock`.
fn generation_path(path: &Path, generation: u32) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let (stem, extension) = match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
        _ => (&*name, ""),
    };
    let stem = match stem.rsplit_once(".g") {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => stem,
    };
    path.with_file_name(format!("{stem}.g{generation}{extension}"))
}

/// The TCP forwards in `info usernet`'s output, whose lines read
/// `TCP[HOST_FORWARD]  8  127.0.0.1 33181  10.0.2.15  22  0  0`
/// (protocol, descriptor, host address and port, guest address and
/// port, queues).
pub(crate) fn forwards_in(info: &str) -> Vec<Forward> {
    info.lines()
        .filter(|line| line.trim_start().starts_with("TCP[HOST_FORWARD]"))
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            Some(Forward {
                host_port: words.get(3)?.parse().ok()?,
                guest_port: words.get(5)?.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_come_from_info_usernet() {
        // As QEMU 7.2 prints it, with a connection that is not a forward.
        let info = "Hub -1 (net0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n  TCP[HOST_FORWARD]  13       127.0.0.1 33181       10.0.2.15    22     0     0\r\n  TCP[HOST_FORWARD]  14       127.0.0.1 40713       10.0.2.15  8080     0     0\r\n  TCP[ESTABLISHED]   21       10.0.2.15 40000        10.0.2.2    80     0     0\r\n";
        let endpoints = Endpoints {
            qmp_socket: "qmp.sock".into(),
            console_socket: "console.sock".into(),
            agent_socket: "agent.sock".into(),
            tpm_socket: "tpm.sock".into(),
            generation: 1,
            forwards: forwards_in(info),
        };
        assert_eq!(endpoints.host_port(22), Some(33181));
        assert_eq!(endpoints.host_port(8080), Some(40713));
        assert_eq!(endpoints.host_port(80), None);
        assert!(forwards_in("garbage\nTCP[HOST_FORWARD] x y\n").is_empty());
    }

    #[test]
    fn generation_paths_replace_the_generation() {
        for (path, expected) in [
            ("/tmp/extra.sock", "/tmp/extra.g3.sock"),
            ("/tmp/extra.g2.sock", "/tmp/extra.g3.sock"),
            ("/tmp/extra", "/tmp/extra.g3"),
            ("/tmp/my.gz.log", "/tmp/my.gz.g3.log"),
            ("/tmp/.hidden", "/tmp/.hidden.g3"),
        ] {
            assert_eq!(
                generation_path(Path::new(path), 3),
                Path::new(expected),
                "{path}"
            );
        }
    }

    #[test]
    fn the_command_lines_tcp_forwards_are_found() {
        let mut cmd = QemuCmdline::new("qemu");
        cmd.user_netdev("net0", &[HostFwd::tcp(0, 22), HostFwd::tcp(0, 8080)]);
        assert_eq!(tcp_forwards(&cmd), [22, 8080]);
        assert!(tcp_forwards(&QemuCmdline::new("qemu")).is_empty());
    }
}
