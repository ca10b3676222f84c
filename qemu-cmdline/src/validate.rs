//! Checks before anything runs: ids unique within their kind, and every
//! reference (a device's netdev, drive, chardev, fsdev and tpmdev; a serial
//! port's, monitor's or TPM's chardev) names something defined.

use std::collections::HashMap;

use crate::args::{Arg, PropsOption, ValueOption};
use crate::cmdline::QemuCmdline;
use crate::error::{Error, Result};

impl QemuCmdline {
    /// Checks ids and references; the error names the option at fault.
    ///
    /// ```
    /// use virtest_qemu_cmdline::QemuCmdline;
    /// let mut cmd = QemuCmdline::new("qemu");
    /// cmd.device("virtio-net-pci", &[("netdev", "n0")]);
    /// let err = cmd.validate().unwrap_err().to_string();
    /// assert!(err.contains("-device virtio-net-pci,netdev=n0") && err.contains("netdev `n0`"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        let mut defined: HashMap<&'static str, Vec<(&str, &Arg)>> = HashMap::new();
        for arg in &self.args {
            let Arg::Props(option, props) = arg else {
                continue;
            };
            let Some(key) = option.id_key() else { continue };
            let Some(id) = props.get(key) else { continue };
            let kind = namespace(*option);
            let seen = defined.entry(kind).or_default();
            if let Some((_, first)) = seen.iter().find(|(other, _)| *other == id) {
                return Err(invalid(
                    arg,
                    format!("{kind} id `{id}` is already used by `{}`", first.display()),
                ));
            }
            seen.push((id, arg));
        }
        let exists = |kind: &str, id: &str| {
            defined
                .get(kind)
                .is_some_and(|ids| ids.iter().any(|(d, _)| *d == id))
        };
        for arg in &self.args {
            let references: Vec<(&str, &str)> = match arg {
                Arg::Props(PropsOption::Device, p) => [
                    ("netdev", "netdev"),
                    ("drive", "drive"),
                    ("chardev", "chardev"),
                    ("fsdev", "fsdev"),
                    ("tpmdev", "tpmdev"),
                ]
                .into_iter()
                .filter_map(|(key, kind)| p.get(key).map(|id| (kind, id)))
                .collect(),
                Arg::Props(PropsOption::Tpmdev, p) => p
                    .get("chardev")
                    .map(|id| ("chardev", id))
                    .into_iter()
                    .collect(),
                Arg::Props(PropsOption::Mon, p) => p
                    .get("chardev")
                    .map(|id| ("chardev", id))
                    .into_iter()
                    .collect(),
                Arg::Value(ValueOption::Serial, v) => v
                    .strip_prefix("chardev:")
                    .map(|id| ("chardev", id))
                    .into_iter()
                    .collect(),
                _ => Vec::new(),
            };
            for (kind, id) in references {
                if !exists(kind, id) {
                    return Err(invalid(arg, format!("{kind} `{id}` is not defined")));
                }
            }
        }
        Ok(())
    }
}

/// Which id namespace an option's ids live in. Drives and blockdev nodes
/// are both what `-device ...,drive=` names.
fn namespace(option: PropsOption) -> &'static str {
    match option {
        PropsOption::Netdev => "netdev",
        PropsOption::Chardev => "chardev",
        PropsOption::Object => "object",
        PropsOption::Drive | PropsOption::Blockdev => "drive",
        PropsOption::Fsdev => "fsdev",
        PropsOption::Tpmdev => "tpmdev",
        _ => "device",
    }
}

fn invalid(arg: &Arg, reason: String) -> Error {
    Error::Invalid {
        option: arg.display(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use crate::{HostFwd, QemuCmdline};

    #[test]
    fn a_complete_command_line_validates() {
        let mut cmd = QemuCmdline::new("qemu");
        cmd.user_netdev("n0", &[HostFwd::tcp(2222, 22)])
            .device("virtio-net-pci", &[("netdev", "n0"), ("id", "nic0")]);
        cmd.socket_chardev("serial0", "/tmp/s")
            .socket_chardev("qmp", "/tmp/q");
        cmd.set_value(crate::ValueOption::Serial, "chardev:serial0");
        cmd.push(crate::Arg::Props(
            crate::PropsOption::Mon,
            crate::Props::parse("chardev=qmp,mode=control", false),
        ));
        cmd.push(crate::Arg::Props(
            crate::PropsOption::Blockdev,
            crate::Props::parse(
                "driver=qcow2,node-name=disk0,file.driver=file,file.filename=/x",
                false,
            ),
        ));
        cmd.device("virtio-blk-pci", &[("drive", "disk0")]);
        cmd.validate().unwrap();
    }

    #[test]
    fn duplicate_ids_name_both_options() {
        let mut cmd = QemuCmdline::new("qemu");
        cmd.user_netdev("n0", &[]).user_netdev("n0", &[]);
        let err = cmd.validate().unwrap_err().to_string();
        assert!(err.contains("netdev id `n0` is already used"), "{err}");
        // Ids of different kinds do not clash.
        let mut cmd = QemuCmdline::new("qemu");
        cmd.user_netdev("x", &[]).socket_chardev("x", "/tmp/x");
        cmd.validate().unwrap();
    }

    #[test]
    fn a_serial_port_on_a_missing_chardev_is_refused() {
        let mut cmd = QemuCmdline::new("qemu");
        cmd.set_value(crate::ValueOption::Serial, "chardev:nope");
        let err = cmd.validate().unwrap_err().to_string();
        assert!(
            err.contains("-serial chardev:nope") && err.contains("chardev `nope` is not defined"),
            "{err}"
        );
    }
}
