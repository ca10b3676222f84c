//! Cloning a command line for the destination of a live migration.
//!
//! The rule: the destination gets the same guest-visible configuration —
//! machine, cpu, memory, smp, kernel, initrd and append, every device,
//! drive, blockdev, netdev and object with its id, in the same order —
//! and fresh host-side endpoints. Host-side endpoints are the paths of
//! chardevs (`path=`, `logfile=`) and of `-qmp`/`-serial` unix sockets and
//! files, TCP ports of chardevs and `-qmp`/`-serial`, the host ports of
//! `hostfwd` rules, and `-pidfile`. Each passes through the caller's
//! remap; everything else is copied as is; `-incoming` is set.
//!
//! Not remapped: the endpoints of `socket`, `stream` and `tap` netdevs
//! (`listen=`, `addr.path=`, `ifname=`), and options kept verbatim. Moving
//! those to a second process needs coordination only the caller can do
//! (a tap device is held by the source until it exits).

use std::path::PathBuf;

use crate::args::{Arg, PropsOption, ValueOption};
use crate::cmdline::QemuCmdline;
use crate::hostfwd::HostFwd;

/// A host-side endpoint of a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A path on the host (a socket, a log file, the pidfile).
    Path(PathBuf),
    /// A TCP port on the host.
    Port(u16),
}

impl QemuCmdline {
    /// A copy for an incoming migration: guest-visible options unchanged
    /// and in order, each host-side endpoint replaced by `remap` (see the
    /// module docs for the list), and `-incoming incoming` set.
    ///
    /// ```
    /// use virtest_qemu_cmdline::{Endpoint, HostFwd, QemuCmdline, ValueOption};
    /// let mut src = QemuCmdline::new("qemu");
    /// src.machine("q35").socket_chardev("qmp", "/run/vm1/qmp.sock").user_netdev("n0", &[HostFwd::tcp(2222, 22)]);
    /// let dst = src.clone_for_incoming("defer", |e| match e {
    ///     Endpoint::Path(p) => Endpoint::Path(p.with_file_name("qmp-dst.sock")),
    ///     Endpoint::Port(_) => Endpoint::Port(2223),
    /// });
    /// assert_eq!(
    ///     dst.display(),
    ///     "qemu -machine q35 -chardev socket,id=qmp,path=/run/vm1/qmp-dst.sock,server=on,wait=off \
    ///      -netdev user,id=n0,hostfwd=tcp:127.0.0.1:2223-:22 -incoming defer"
    /// );
    /// ```
    pub fn clone_for_incoming(
        &self,
        incoming: &str,
        mut remap: impl FnMut(Endpoint) -> Endpoint,
    ) -> QemuCmdline {
        let mut clone = self.clone();
        clone
            .args
            .retain(|a| !matches!(a, Arg::Value(ValueOption::Incoming, _)));
        for arg in &mut clone.args {
            match arg {
                Arg::Props(PropsOption::Chardev, props) => {
                    for (key, value) in props.entries_mut() {
                        let Some(v) = value else { continue };
                        match key.as_str() {
                            "path" | "logfile" => {
                                *v = path_of(remap(Endpoint::Path(v.as_str().into())))
                            }
                            "port" => {
                                if let Ok(port) = v.parse() {
                                    *v = port_of(remap(Endpoint::Port(port))).to_string();
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Arg::Props(PropsOption::Netdev, props) => {
                    for (key, value) in props.entries_mut() {
                        let Some(v) = value.as_mut().filter(|_| key == "hostfwd") else {
                            continue;
                        };
                        if let Ok(mut rule) = v.parse::<HostFwd>() {
                            rule.host_port = port_of(remap(Endpoint::Port(rule.host_port)));
                            *v = rule.to_string();
                        }
                    }
                }
                Arg::Value(ValueOption::Qmp | ValueOption::Serial, value) => {
                    *value = remap_device(value, &mut remap)
                }
                Arg::Value(ValueOption::Pidfile, value) => {
                    *value = path_of(remap(Endpoint::Path(value.as_str().into())))
                }
                _ => {}
            }
        }
        clone
            .args
            .push(Arg::Value(ValueOption::Incoming, incoming.to_string()));
        clone
    }
}

/// Remaps the endpoint of a character device string (`unix:PATH,...`,
/// `file:PATH`, `tcp:HOST:PORT,...`); others (`stdio`, `chardev:ID`) stay.
fn remap_device(device: &str, remap: &mut impl FnMut(Endpoint) -> Endpoint) -> String {
    let (spec, options) = match device.find(',') {
        Some(i) => device.split_at(i),
        None => (device, ""),
    };
    let spec = if let Some(path) = spec.strip_prefix("unix:") {
        format!("unix:{}", path_of(remap(Endpoint::Path(path.into()))))
    } else if let Some(path) = spec.strip_prefix("file:") {
        format!("file:{}", path_of(remap(Endpoint::Path(path.into()))))
    } else if let Some((host, port)) = spec.strip_prefix("tcp:").and_then(|a| a.rsplit_once(':')) {
        match port.parse() {
            Ok(port) => format!("tcp:{host}:{}", port_of(remap(Endpoint::Port(port)))),
            Err(_) => spec.to_string(),
        }
    } else {
        spec.to_string()
    };
    format!("{spec}{options}")
}

fn path_of(endpoint: Endpoint) -> String {
    match endpoint {
        Endpoint::Path(p) => p.to_string_lossy().into_owned(),
        Endpoint::Port(p) => p.to_string(),
    }
}

fn port_of(endpoint: Endpoint) -> u16 {
    match endpoint {
        Endpoint::Port(p) => p,
        Endpoint::Path(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::FlagOption;

    /// A command line with every kind of option, as the VM layer builds it.
    fn full() -> QemuCmdline {
        let (mut cmd, warnings) = QemuCmdline::parse_text(
            "qemu-system-x86_64 -name vm1,debug-threads=on -uuid 6f1c1d2e-0000-4000-8000-000000000001 \
             -machine q35,accel=tcg -accel tcg -cpu max -m 256 -smp 2,sockets=1 \
             -kernel /k/vmlinux -initrd /k/initrd -append 'console=ttyS0 quiet' \
             -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0,id=rng \
             -blockdev driver=qcow2,node-name=disk0,file.driver=file,file.filename=/d/overlay.qcow2 \
             -device virtio-blk-pci,drive=disk0,id=blk0 \
             -netdev user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp::5353-:53 -device virtio-net-pci,netdev=n0,id=nic0 \
             -chardev socket,id=qmp,path=/run/vm1/qmp.sock,server=on,wait=off -mon chardev=qmp,mode=control \
             -chardev socket,id=console,path=/run/vm1/console.sock,server=on,wait=off,logfile=/run/vm1/console.log \
             -serial chardev:console -qmp unix:/run/vm1/extra.sock,server=on,wait=off -chardev socket,id=t,host=127.0.0.1,port=4444,server=on \
             -pidfile /run/vm1/qemu.pid -display none -vga none -nodefaults -no-user-config -vnc :5 -incoming tcp:0:1",
            "qemu",
        )
        .unwrap();
        assert_eq!(warnings.len(), 1);
        cmd.flag(FlagOption::NoReboot);
        cmd
    }

    fn is_host_side(arg: &Arg) -> bool {
        matches!(
            arg,
            Arg::Props(PropsOption::Chardev | PropsOption::Netdev, _)
                | Arg::Value(
                    ValueOption::Qmp
                        | ValueOption::Serial
                        | ValueOption::Pidfile
                        | ValueOption::Incoming,
                    _
                )
        )
    }

    #[test]
    fn every_guest_visible_option_survives_in_order_and_every_endpoint_is_fresh() {
        let src = full();
        src.validate().unwrap();
        let mut seen = Vec::new();
        let dst = src.clone_for_incoming("defer", |e| {
            seen.push(e.clone());
            match e {
                Endpoint::Path(p) => {
                    Endpoint::Path(PathBuf::from("/run/vm1-dst").join(p.file_name().unwrap()))
                }
                Endpoint::Port(p) => Endpoint::Port(p + 10000),
            }
        });
        dst.validate().unwrap();
        let guest = |c: &QemuCmdline| {
            c.args
                .iter()
                .filter(|a| !is_host_side(a))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            guest(&dst),
            guest(&src),
            "guest-visible options are the same, in the same order"
        );
        assert_eq!(dst.value(ValueOption::Incoming), Some("defer"));
        assert_eq!(
            dst.args
                .iter()
                .filter(|a| matches!(a, Arg::Value(ValueOption::Incoming, _)))
                .count(),
            1
        );
        assert_eq!(
            seen.len(),
            8,
            "two forwards, four paths, a chardev port, the pidfile: {seen:#?}"
        );
        let text = dst.display();
        assert!(
            !text.contains("/run/vm1/"),
            "no source path is left: {text}"
        );
        for fresh in [
            "hostfwd=tcp:127.0.0.1:12222-:22",
            "hostfwd=udp::15353-:53",
            "port=14444",
            "logfile=/run/vm1-dst/console.log",
            "-pidfile /run/vm1-dst/qemu.pid",
            "unix:/run/vm1-dst/extra.sock,server=on,wait=off",
        ] {
            assert!(text.contains(fresh), "{fresh} missing from {text}");
        }
        // Ids and their kinds, netdev types included, are unchanged.
        let ids = |c: &QemuCmdline| {
            c.args
                .iter()
                .filter_map(|a| match a {
                    Arg::Props(o, p) => {
                        Some((*o, p.head().map(str::to_string), p.id().map(str::to_string)))
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&dst), ids(&src));
    }

    #[test]
    fn an_identity_remap_only_sets_incoming() {
        let src = full();
        let dst = src.clone_for_incoming("unix:/tmp/mig.sock", |e| e);
        let mut expected = src.clone();
        expected
            .args
            .retain(|a| !matches!(a, Arg::Value(ValueOption::Incoming, _)));
        expected.push(Arg::Value(
            ValueOption::Incoming,
            "unix:/tmp/mig.sock".into(),
        ));
        assert_eq!(dst, expected);
    }
}
