//! A whole QEMU invocation: the binary and its options, in order.
//!
//! Order is kept because it is guest-visible: devices get PCI slots in
//! the order they are given. Options this crate does not model are kept
//! verbatim where they were.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::args::{Arg, FlagOption, PropsOption, ValueOption};
use crate::error::{Error, Result};
use crate::hostfwd::HostFwd;
use crate::props::Props;

/// One QEMU invocation.
///
/// ```
/// use virtest_qemu_cmdline::{FlagOption, HostFwd, QemuCmdline};
/// let mut cmd = QemuCmdline::new("qemu-system-x86_64");
/// cmd.machine("q35").memory_mib(256).flag(FlagOption::NoDefaults);
/// cmd.user_netdev("n0", &[HostFwd::tcp(2222, 22)]).device("virtio-net-pci", &[("netdev", "n0")]);
/// let argv: Vec<String> = cmd.to_args().iter().map(|a| a.to_string_lossy().into_owned()).collect();
/// assert_eq!(argv[..4], ["-machine", "q35", "-m", "256"]);
/// assert!(argv.contains(&"user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22".to_string()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCmdline {
    /// The QEMU binary.
    pub binary: PathBuf,
    /// Its options, in order.
    pub args: Vec<Arg>,
}

/// Something [`QemuCmdline::parse`] kept verbatim, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseWarning {
    /// The option as given.
    pub option: String,
    /// Why it was not understood.
    pub reason: String,
}

impl QemuCmdline {
    /// An empty command line for `binary`.
    pub fn new(binary: impl Into<PathBuf>) -> QemuCmdline {
        QemuCmdline {
            binary: binary.into(),
            args: Vec::new(),
        }
    }

    /// Appends an option.
    pub fn push(&mut self, arg: Arg) -> &mut QemuCmdline {
        self.args.push(arg);
        self
    }

    /// Sets a single-valued property option, replacing an earlier one in
    /// place, or appending it.
    pub fn set_props(&mut self, option: PropsOption, props: Props) -> &mut QemuCmdline {
        self.replace_or_push(
            Arg::Props(option, props),
            |a| matches!(a, Arg::Props(o, _) if *o == option),
        )
    }

    /// Sets a single-valued plain option, replacing or appending it.
    pub fn set_value(&mut self, option: ValueOption, value: impl Into<String>) -> &mut QemuCmdline {
        self.replace_or_push(
            Arg::Value(option, value.into()),
            |a| matches!(a, Arg::Value(o, _) if *o == option),
        )
    }

    /// Replaces the first option `same` picks with `arg`, or appends it.
    fn replace_or_push(&mut self, arg: Arg, same: impl Fn(&Arg) -> bool) -> &mut QemuCmdline {
        match self.args.iter_mut().find(|a| same(a)) {
            Some(slot) => *slot = arg,
            None => self.args.push(arg),
        }
        self
    }

    /// The first property option of this kind.
    pub fn props(&self, option: PropsOption) -> Option<&Props> {
        self.args.iter().find_map(|a| match a {
            Arg::Props(o, p) if *o == option => Some(p),
            _ => None,
        })
    }

    /// Every property option of this kind, in order.
    pub fn all_props(&self, option: PropsOption) -> impl Iterator<Item = &Props> {
        self.args.iter().filter_map(move |a| match a {
            Arg::Props(o, p) if *o == option => Some(p),
            _ => None,
        })
    }

    /// The first plain option of this kind.
    pub fn value(&self, option: ValueOption) -> Option<&str> {
        self.args.iter().find_map(|a| match a {
            Arg::Value(o, v) if *o == option => Some(v.as_str()),
            _ => None,
        })
    }

    /// `-machine TYPE`.
    pub fn machine(&mut self, machine_type: &str) -> &mut QemuCmdline {
        self.set_props(PropsOption::Machine, Props::with_head(machine_type))
    }

    /// `-accel NAME`.
    pub fn accel(&mut self, accel: &str) -> &mut QemuCmdline {
        self.push(Arg::Props(PropsOption::Accel, Props::with_head(accel)))
    }

    /// `-cpu MODEL`.
    pub fn cpu(&mut self, model: &str) -> &mut QemuCmdline {
        self.set_props(PropsOption::Cpu, Props::with_head(model))
    }

    /// `-m MIB`.
    pub fn memory_mib(&mut self, mib: u32) -> &mut QemuCmdline {
        self.set_props(PropsOption::Memory, Props::with_head(mib.to_string()))
    }

    /// `-m SIZEk`, for a size that is not whole MiB.
    pub fn memory_kib(&mut self, kib: u64) -> &mut QemuCmdline {
        self.set_props(PropsOption::Memory, Props::with_head(format!("{kib}k")))
    }

    /// `-smp N`.
    pub fn smp(&mut self, cpus: u32) -> &mut QemuCmdline {
        self.set_props(PropsOption::Smp, Props::with_head(cpus.to_string()))
    }

    /// `-kernel PATH -initrd PATH -append CMDLINE`.
    pub fn direct_boot(
        &mut self,
        kernel: &str,
        initrd: Option<&str>,
        append: &str,
    ) -> &mut QemuCmdline {
        self.set_value(ValueOption::Kernel, kernel);
        if let Some(initrd) = initrd {
            self.set_value(ValueOption::Initrd, initrd);
        }
        self.set_value(ValueOption::Append, append)
    }

    /// `-device DRIVER,key=value,...`.
    pub fn device(&mut self, driver: &str, props: &[(&str, &str)]) -> &mut QemuCmdline {
        let mut p = Props::with_head(driver);
        for (k, v) in props {
            p.push(k, *v);
        }
        self.push(Arg::Props(PropsOption::Device, p))
    }

    /// A disk on virtio-blk: `-drive file=FILE,format=FORMAT,if=none,id=ID`
    /// with `drive`'s further properties, and `-device
    /// virtio-blk-pci,drive=ID` with `device`'s.
    ///
    /// ```
    /// use std::path::Path;
    /// use virtest_qemu_cmdline::QemuCmdline;
    /// let mut cmd = QemuCmdline::new("qemu");
    /// let seed = Path::new("/run/vm/seed.img");
    /// cmd.virtio_disk("seed", seed, "raw", &[("readonly", "on")], &[]);
    /// assert_eq!(
    ///     cmd.display(),
    ///     "qemu -drive file=/run/vm/seed.img,format=raw,if=none,id=seed,readonly=on \
    ///      -device virtio-blk-pci,drive=seed"
    /// );
    /// ```
    pub fn virtio_disk(
        &mut self,
        id: &str,
        file: &Path,
        format: &str,
        drive: &[(&str, &str)],
        device: &[(&str, &str)],
    ) -> &mut QemuCmdline {
        let mut props = Props::default();
        props
            .set("file", file.to_string_lossy())
            .set("format", format)
            .set("if", "none")
            .set("id", id);
        for (key, value) in drive {
            props.set(key, *value);
        }
        self.push(Arg::Props(PropsOption::Drive, props));
        let mut device_props = vec![("drive", id)];
        device_props.extend_from_slice(device);
        self.device("virtio-blk-pci", &device_props)
    }

    /// `-netdev user,id=ID,hostfwd=...` with the given forwards.
    pub fn user_netdev(&mut self, id: &str, forwards: &[HostFwd]) -> &mut QemuCmdline {
        let mut p = Props::with_head("user");
        p.set("id", id);
        for fwd in forwards {
            p.push("hostfwd", fwd.to_string());
        }
        self.push(Arg::Props(PropsOption::Netdev, p))
    }

    /// `-netdev socket,id=ID,mcast=GROUP:PORT,localaddr=127.0.0.1`: a
    /// segment shared by every netdev on the same group, kept on the
    /// host's loopback.
    pub fn multicast_netdev(
        &mut self,
        id: &str,
        group: std::net::SocketAddrV4,
    ) -> &mut QemuCmdline {
        let mut p = Props::with_head("socket");
        p.set("id", id)
            .set("mcast", group.to_string())
            .set("localaddr", "127.0.0.1");
        self.push(Arg::Props(PropsOption::Netdev, p))
    }

    /// `-chardev socket,id=ID,path=PATH,server=on,wait=off`: a unix socket
    /// QEMU listens on.
    pub fn socket_chardev(&mut self, id: &str, path: &str) -> &mut QemuCmdline {
        self.push(Arg::Props(
            PropsOption::Chardev,
            socket_chardev_props(id, path),
        ))
    }

    /// Removes every `-OPTION` whose id (`id`, or `node-name` for
    /// `-blockdev`) is `id`; returns whether one was there.
    ///
    /// ```
    /// use virtest_qemu_cmdline::{PropsOption, QemuCmdline};
    /// let mut cmd = QemuCmdline::new("qemu");
    /// cmd.device("virtio-blk-pci", &[("id", "data"), ("drive", "data")]);
    /// assert!(cmd.remove_props(PropsOption::Device, "data"));
    /// assert!(!cmd.remove_props(PropsOption::Device, "data"));
    /// assert_eq!(cmd.display(), "qemu");
    /// ```
    pub fn remove_props(&mut self, option: PropsOption, id: &str) -> bool {
        let key = option.id_key().unwrap_or("id");
        let before = self.args.len();
        self.args.retain(|arg| {
            !matches!(arg, Arg::Props(o, props) if *o == option && props.get(key) == Some(id))
        });
        self.args.len() != before
    }

    /// An option without a value.
    pub fn flag(&mut self, flag: FlagOption) -> &mut QemuCmdline {
        if !self.args.contains(&Arg::Flag(flag)) {
            self.args.push(Arg::Flag(flag));
        }
        self
    }

    /// The options as QEMU's argv, without the binary.
    pub fn to_args(&self) -> Vec<OsString> {
        self.args.iter().flat_map(Arg::to_args).collect()
    }

    /// A [`std::process::Command`] for this invocation.
    pub fn to_command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.binary);
        cmd.args(self.to_args());
        cmd
    }

    /// The command line as one shell-quoted line, for logs and errors.
    pub fn display(&self) -> String {
        std::iter::once(self.binary.as_os_str().to_owned())
            .chain(self.to_args())
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Parses an argv (without the binary). Options it does not model are
    /// kept verbatim, in place, with a warning each.
    pub fn parse(
        binary: impl Into<PathBuf>,
        argv: &[OsString],
    ) -> (QemuCmdline, Vec<ParseWarning>) {
        let mut cmd = QemuCmdline::new(binary);
        let mut warnings = Vec::new();
        let mut i = 0;
        while i < argv.len() {
            let token = &argv[i];
            let name = option_name(token);
            let next = argv.get(i + 1).and_then(|v| v.to_str());
            let (arg, used) = match name.as_deref() {
                Some(n) => match (props_option(n), value_option(n), flag_option(n)) {
                    (Some(o), _, _) if next.is_some() => (
                        Arg::Props(o, Props::parse(next.unwrap_or_default(), o.has_head())),
                        2,
                    ),
                    (_, Some(o), _) if next.is_some() => {
                        (Arg::Value(o, next.unwrap_or_default().to_string()), 2)
                    }
                    (_, _, Some(f)) => (Arg::Flag(f), 1),
                    (None, None, None) => {
                        raw(argv, i, "not modelled: kept verbatim", &mut warnings)
                    }
                    _ => raw(argv, i, "its value is missing or not UTF-8", &mut warnings),
                },
                None => raw(argv, i, "not an option (no leading dash)", &mut warnings),
            };
            cmd.args.push(arg);
            i += used;
        }
        (cmd, warnings)
    }

    /// Parses a command line written as text (a file, a log line): words
    /// split as a shell would, with quotes and backslash-newlines. A first
    /// word that is not an option is the binary; else `default_binary`.
    pub fn parse_text(
        text: &str,
        default_binary: impl Into<PathBuf>,
    ) -> Result<(QemuCmdline, Vec<ParseWarning>)> {
        let words = shell_words::split(text).map_err(|_| Error::Unsplittable {
            text: text.chars().take(80).collect(),
        })?;
        let (binary, rest) = match words.split_first() {
            Some((first, rest)) if !first.starts_with('-') => (PathBuf::from(first), rest),
            _ => (default_binary.into(), &words[..]),
        };
        let argv: Vec<OsString> = rest.iter().map(OsString::from).collect();
        Ok(QemuCmdline::parse(binary, &argv))
    }
}

/// The properties of `-chardev socket,id=ID,path=PATH,server=on,wait=off`,
/// a unix socket QEMU listens on, for callers that add more (`logfile`).
pub fn socket_chardev_props(id: &str, path: &str) -> Props {
    let mut p = Props::with_head("socket");
    p.set("id", id)
        .set("path", path)
        .set("server", "on")
        .set("wait", "off");
    p
}

/// An option's name, if the token is an option (`-device`, `--device`).
fn option_name(token: &OsStr) -> Option<String> {
    let s = token.to_str()?;
    let name = s.strip_prefix("--").or_else(|| s.strip_prefix('-'))?;
    (!name.is_empty()).then(|| name.to_string())
}

fn props_option(name: &str) -> Option<PropsOption> {
    PropsOption::ALL.into_iter().find(|o| o.name() == name)
}

fn value_option(name: &str) -> Option<ValueOption> {
    ValueOption::ALL.into_iter().find(|o| o.name() == name)
}

fn flag_option(name: &str) -> Option<FlagOption> {
    FlagOption::ALL.into_iter().find(|o| o.name() == name)
}

/// Keeps an option verbatim with the values after it (words up to the
/// next option). An option's arity is unknown, so a value starting with a
/// dash would be read as the next option.
fn raw(
    argv: &[OsString],
    i: usize,
    reason: &str,
    warnings: &mut Vec<ParseWarning>,
) -> (Arg, usize) {
    let mut end = i + 1;
    while end < argv.len() && option_name(&argv[end]).is_none() {
        end += 1;
    }
    let words = argv[i..end].to_vec();
    let option = words
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    tracing::warn!(%option, reason, "QEMU option kept verbatim");
    warnings.push(ParseWarning {
        option,
        reason: reason.to_string(),
    });
    (Arg::Raw(words), end - i)
}

/// Quotes a word for a shell when it needs it: a command line people
/// read, so `key=value,key=value` and paths stay bare (`shell_words::quote`
/// would quote each `=`), while anything a POSIX shell would take apart
/// is single-quoted.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:,=+@%".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn unknown_options_are_kept_verbatim_in_place_with_a_warning() {
        let (cmd, warnings) = QemuCmdline::parse(
            "qemu",
            &argv(&[
                "-m",
                "256",
                "-vnc",
                ":1",
                "-device",
                "virtio-rng-pci",
                "-enable-fips",
                "-nodefaults",
            ]),
        );
        assert_eq!(cmd.args[1], Arg::Raw(argv(&["-vnc", ":1"])));
        assert_eq!(cmd.args[3], Arg::Raw(argv(&["-enable-fips"])));
        assert_eq!(cmd.args[4], Arg::Flag(FlagOption::NoDefaults));
        assert_eq!(warnings.len(), 2);
        assert_eq!(warnings[0].option, "-vnc :1");
        assert_eq!(
            cmd.to_args(),
            argv(&[
                "-m",
                "256",
                "-vnc",
                ":1",
                "-device",
                "virtio-rng-pci",
                "-enable-fips",
                "-nodefaults"
            ])
        );
    }

    #[test]
    fn a_known_option_without_its_value_is_kept_and_warned() {
        let (cmd, warnings) = QemuCmdline::parse("qemu", &argv(&["-kernel"]));
        assert_eq!(cmd.args, [Arg::Raw(argv(&["-kernel"]))]);
        assert!(warnings[0].reason.contains("missing"));
    }

    #[test]
    fn text_splits_like_a_shell() {
        let text = "/usr/bin/qemu-system-x86_64 -machine q35 \\\n  -append 'console=ttyS0 quiet' # a comment\n -name \"my \\\"vm\\\"\"";
        let (cmd, warnings) = QemuCmdline::parse_text(text, "qemu").unwrap();
        assert!(warnings.is_empty());
        assert_eq!(cmd.binary, PathBuf::from("/usr/bin/qemu-system-x86_64"));
        assert_eq!(cmd.value(ValueOption::Append), Some("console=ttyS0 quiet"));
        assert_eq!(
            cmd.props(PropsOption::Name).unwrap().head(),
            Some("my \"vm\"")
        );
        assert!(QemuCmdline::parse_text("-m 'unclosed", "qemu").is_err());
    }

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let mut cmd = QemuCmdline::new("qemu");
        cmd.set_value(ValueOption::Append, "console=ttyS0 quiet");
        assert_eq!(cmd.display(), "qemu -append 'console=ttyS0 quiet'");
    }
}
