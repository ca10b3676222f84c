//! Finding QEMU binaries and probing what they are: version, accelerators
//! and machine types. Probes run each binary once per process.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::arch::Arch;
use crate::error::{Error, Result};

/// The kinds of QEMU binary virtest uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryKind {
    /// The system emulator that runs guests (`qemu-system-<arch>`).
    System,
    /// The system emulator for a migration's destination.
    Destination,
    /// The image tool (`qemu-img`).
    Img,
}

impl BinaryKind {
    /// The environment variable that names this binary.
    pub fn env_var(self) -> &'static str {
        match self {
            BinaryKind::System => "QEMU",
            BinaryKind::Destination => "QEMU_DST",
            BinaryKind::Img => "QEMU_IMG",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            BinaryKind::System | BinaryKind::Destination => "QEMU system emulator",
            BinaryKind::Img => "qemu-img",
        }
    }

    fn package(self, arch: Arch) -> String {
        match self {
            BinaryKind::System | BinaryKind::Destination => {
                format!("{} qemu-utils", arch.emulator_package())
            }
            BinaryKind::Img => "qemu-utils".into(),
        }
    }

    /// The environment variable that names this binary for guests of
    /// `arch`: [`BinaryKind::env_var`] for the host's own, with the
    /// architecture after it for another (`QEMU_AARCH64`), so `$QEMU` can
    /// stay the host's emulator.
    pub fn env_var_for(self, arch: Arch) -> String {
        match (self, arch.is_host()) {
            (BinaryKind::Img, _) | (_, true) => self.env_var().into(),
            (_, false) => format!("{}_{}", self.env_var(), arch.as_str().to_ascii_uppercase()),
        }
    }

    /// Names looked for on `PATH`, best first, for guests of `arch`
    /// (`qemu-kvm` only runs the host's own).
    pub fn path_names(self, arch: Arch) -> Vec<String> {
        match self {
            BinaryKind::System | BinaryKind::Destination => {
                let mut names = vec![arch.system_emulator().to_string()];
                if arch.is_host() {
                    names.push("qemu-kvm".into());
                }
                names
            }
            BinaryKind::Img => vec!["qemu-img".into()],
        }
    }
}

/// Finds a QEMU binary: `explicit` if given (an error if it is not an
/// executable), else the kind's environment
/// variable (`QEMU`, `QEMU_DST` falling back to `QEMU`, `QEMU_IMG`), then
/// the usual names on `PATH` and `/usr/libexec/qemu-kvm`.
///
/// ```no_run
/// use virtest_qemu_cmdline::binary::{find, BinaryKind};
/// let qemu = find(BinaryKind::System, None)?;
/// println!("{}", qemu.display());
/// # Ok::<(), virtest_qemu_cmdline::Error>(())
/// ```
pub fn find(kind: BinaryKind, explicit: Option<&Path>) -> Result<PathBuf> {
    find_for(kind, Arch::host().unwrap_or_default(), explicit)
}

/// [`find`] for guests of `arch`: `qemu-system-aarch64` and
/// `$QEMU_AARCH64` for Arm guests on an x86 machine
/// ([`BinaryKind::env_var_for`], [`BinaryKind::path_names`]).
pub fn find_for(kind: BinaryKind, arch: Arch, explicit: Option<&Path>) -> Result<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let path_var = env("PATH").unwrap_or_default();
    find_in(kind, arch, explicit, &|name| env(name), &path_var)
}

/// [`find_for`] with the environment given, for tests.
pub fn find_in(
    kind: BinaryKind,
    arch: Arch,
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    path_var: &std::ffi::OsStr,
) -> Result<PathBuf> {
    let mut tried = Vec::new();
    let candidate = |tried: &mut Vec<String>, path: PathBuf, how: String| {
        if is_executable(&path) {
            Some(path)
        } else {
            tried.push(format!("{how} {}", path.display()));
            None
        }
    };
    let not_found = |tried: Vec<String>| Error::BinaryNotFound {
        what: kind.describe(),
        tried: tried.into_iter().map(|t| t.trim().to_string()).collect(),
        package: kind.package(arch),
        var: kind.env_var_for(arch),
    };
    // A path the user gave is used or reported, never silently replaced.
    if let Some(path) = explicit {
        return candidate(&mut tried, path.to_path_buf(), "the given path".into())
            .ok_or_else(|| not_found(tried));
    }
    let mut vars = vec![kind.env_var_for(arch)];
    if kind == BinaryKind::Destination {
        vars.push(BinaryKind::System.env_var_for(arch));
    }
    for var in vars {
        if let Some(value) = env(&var) {
            let value = PathBuf::from(value);
            // A bare name in the variable is looked up on PATH.
            let resolved = if value.components().count() == 1 {
                std::env::split_paths(path_var)
                    .map(|d| d.join(&value))
                    .find(|p| is_executable(p))
                    .unwrap_or(value)
            } else {
                value
            };
            if let Some(found) = candidate(&mut tried, resolved, format!("${var}")) {
                return Ok(found);
            }
        }
    }
    for name in kind.path_names(arch) {
        if let Some(found) = std::env::split_paths(path_var)
            .map(|d| d.join(&name))
            .find(|p| is_executable(p))
        {
            return Ok(found);
        }
        tried.push(format!("{name} on PATH"));
    }
    if kind != BinaryKind::Img
        && arch.is_host()
        && let Some(found) = candidate(&mut tried, "/usr/libexec/qemu-kvm".into(), String::new())
    {
        return Ok(found);
    }
    Err(not_found(tried))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A QEMU version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Micro.
    pub micro: u32,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// Reads the version from `-version` output, as QEMU 2.x through 10.x
/// print it (`QEMU emulator version 7.2.22 (Debian ...)`,
/// `qemu-img version 10.0.2`).
///
/// ```
/// use virtest_qemu_cmdline::binary::parse_version;
/// let v = parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)").unwrap();
/// assert_eq!((v.major, v.minor, v.micro), (10, 0, 2));
/// ```
pub fn parse_version(output: &str) -> Option<Version> {
    let first = output.lines().next()?;
    if !first.to_ascii_lowercase().contains("qemu") {
        return None;
    }
    let rest = &first[first.find("version ")? + "version ".len()..];
    let number = rest
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = number.split('.').map(|p| p.parse::<u32>());
    Some(Version {
        major: parts.next()?.ok()?,
        minor: parts.next().unwrap_or(Ok(0)).ok()?,
        micro: parts.next().unwrap_or(Ok(0)).ok()?,
    })
}

/// What a QEMU system emulator is and can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The binary.
    pub path: PathBuf,
    /// Its version.
    pub version: Version,
    /// The first line of `-version`.
    pub version_line: String,
    /// Accelerators it was built with (`tcg`, `kvm`).
    pub accelerators: Vec<String>,
    /// Machine types it offers (`pc`, `q35`, `pc-q35-7.2`).
    pub machines: Vec<String>,
    /// Its aliases of machine types (`q35` is `pc-q35-7.2`).
    pub machine_aliases: Vec<(String, String)>,
}

impl Probe {
    /// Whether the binary was built with `accel`.
    pub fn has_accel(&self, accel: &str) -> bool {
        self.accelerators.iter().any(|a| a == accel)
    }

    /// Checks that this QEMU offers the machine type `machine` names
    /// (`q35`, or `q35,smm=off` with its properties) for a guest of
    /// `arch` ([`Probe::resolve_machine`]); the error says which emulator
    /// would.
    pub fn check_machine(&self, machine: &str, arch: Arch) -> Result<()> {
        let machine = machine.split(',').next().unwrap_or_default();
        match self.resolve_machine(machine) {
            Some(_) => Ok(()),
            None => Err(Error::NoMachine {
                path: self.path.clone(),
                machine: machine.to_string(),
                arch,
            }),
        }
    }

    /// The machine type `name` is on this QEMU: the type an alias
    /// stands for (`q35` is `pc-q35-7.2` on QEMU 7.2), or `name` itself
    /// if it offers that type; `None` if not.
    pub fn resolve_machine(&self, name: &str) -> Option<&str> {
        match self.machine_aliases.iter().find(|(alias, _)| alias == name) {
            Some((_, machine)) => Some(machine),
            None => self
                .machines
                .iter()
                .find(|m| *m == name)
                .map(String::as_str),
        }
    }
}

/// Probes a system emulator (once per binary and modification time).
pub fn probe(path: &Path) -> Result<Arc<Probe>> {
    type Cache = Mutex<HashMap<(PathBuf, Option<SystemTime>), Arc<Probe>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let key = (path.to_path_buf(), mtime);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(p) = cache.lock().expect("probe cache lock").get(&key) {
        return Ok(p.clone());
    }
    let (version, version_line) = probe_version(path)?;
    let accelerators = run(path, "-accel", "help")?
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let machine_help = run(path, "-machine", "help")?;
    let machines = machine_help
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let machine_aliases = machine_help.lines().filter_map(parse_alias).collect();
    let probe = Arc::new(Probe {
        path: path.to_path_buf(),
        version,
        version_line,
        accelerators,
        machines,
        machine_aliases,
    });
    cache
        .lock()
        .expect("probe cache lock")
        .insert(key, probe.clone());
    Ok(probe)
}

/// The alias a line of `-machine help` declares: `q35  Standard PC (Q35 +
/// ICH9, 2009) (alias of pc-q35-7.2)` is `("q35", "pc-q35-7.2")`.
fn parse_alias(line: &str) -> Option<(String, String)> {
    let name = line.split_whitespace().next()?;
    let (_, rest) = line.rsplit_once("(alias of ")?;
    let machine = rest.split(')').next()?.trim();
    Some((name.to_string(), machine.to_string()))
}

/// The version of any QEMU binary (system emulator or `qemu-img`).
pub fn probe_version(path: &Path) -> Result<(Version, String)> {
    let flag = if path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("qemu-img"))
    {
        "--version"
    } else {
        "-version"
    };
    let output = run(path, flag, "")?;
    let version = parse_version(&output).ok_or_else(|| Error::NotQemu {
        path: path.to_path_buf(),
        flag,
        output: output.chars().take(200).collect(),
    })?;
    Ok((
        version,
        output.lines().next().unwrap_or_default().to_string(),
    ))
}

/// Runs `path flag [arg]` with a deadline and returns its stdout.
fn run(path: &Path, flag: &'static str, arg: &str) -> Result<String> {
    const DEADLINE: Duration = Duration::from_secs(10);
    let fail = |reason: String| Error::Probe {
        path: path.to_path_buf(),
        flag,
        reason,
    };
    let mut cmd = Command::new(path);
    cmd.arg(flag);
    if !arg.is_empty() {
        cmd.arg(arg);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.by_ref().take(1 << 20).read_to_end(&mut out);
            out
        })
    };
    let reader = read(Box::new(child.stdout.take().expect("piped")));
    let stderr_reader = read(Box::new(child.stderr.take().expect("piped")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| fail(e.to_string()))? {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("no answer within {} s", DEADLINE.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let err = String::from_utf8_lossy(&stderr_reader.join().unwrap_or_default()).into_owned();
    if !status.success() && parse_version(&out).is_none() {
        let said = format!("{}{}", out, err);
        return Err(Error::NotQemu {
            path: path.to_path_buf(),
            flag,
            output: format!(
                "{} ({status})",
                said.trim().chars().take(200).collect::<String>()
            ),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn machine_help_lines_declare_their_aliases() {
        assert_eq!(
            parse_alias(
                "q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)"
            ),
            Some(("q35".into(), "pc-q35-7.2".into()))
        );
        assert_eq!(
            parse_alias("pc-q35-7.0           Standard PC (Q35 + ICH9, 2009) (deprecated)"),
            None
        );
    }

    #[test]
    fn versions_of_every_format_parse() {
        let cases = [
            (
                "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)",
                (7, 2, 22),
            ),
            (
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)",
                (10, 0, 2),
            ),
            (
                "QEMU emulator version 8.2.0 (v8.2.0)\nCopyright (c) 2003-2023",
                (8, 2, 0),
            ),
            ("qemu-img version 9.1.50 (v9.1.0-1234-gabc)", (9, 1, 50)),
            ("QEMU PC emulator version 2.5.0", (2, 5, 0)),
        ];
        for (text, (major, minor, micro)) in cases {
            assert_eq!(
                parse_version(text),
                Some(Version {
                    major,
                    minor,
                    micro
                }),
                "{text}"
            );
        }
        assert_eq!(parse_version("bash version 5.2"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn not_found_names_every_place_and_the_package() {
        let no_env = |_: &str| None;
        let err = find_in(
            BinaryKind::System,
            Arch::X86_64,
            None,
            &no_env,
            &OsString::from("/nonexistent"),
        )
        .unwrap_err()
        .to_string();
        for part in [
            "qemu-system-x86_64 on PATH",
            "qemu-kvm on PATH",
            "apt-get install qemu-system-x86",
            "QEMU",
        ] {
            assert!(err.contains(part), "{part} missing from: {err}");
        }
    }

    #[test]
    fn a_given_path_that_is_missing_is_an_error_not_a_fallback() {
        let no_env = |_: &str| None;
        let path = std::env::var_os("PATH").unwrap_or_default();
        let err = find_in(
            BinaryKind::System,
            Arch::X86_64,
            Some(Path::new("/nope/qemu")),
            &no_env,
            &path,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("the given path /nope/qemu"), "{err}");
        assert!(!err.contains("on PATH"), "{err}");
    }

    /// An executable file `dir/name` (a shell script doing nothing).
    fn fake_executable(dir: &Path, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn the_env_var_wins_over_path_and_dst_falls_back_to_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let fake = fake_executable(dir.path(), "my-qemu");
        let env = |name: &str| (name == "QEMU").then(|| fake.clone().into_os_string());
        let path = OsString::from("/nonexistent");
        assert_eq!(
            find_in(BinaryKind::System, Arch::X86_64, None, &env, &path).unwrap(),
            fake
        );
        assert_eq!(
            find_in(BinaryKind::Destination, Arch::X86_64, None, &env, &path).unwrap(),
            fake
        );
        assert!(find_in(BinaryKind::Img, Arch::X86_64, None, &env, &path).is_err());
    }

    #[test]
    fn an_arm_guest_on_this_machine_has_its_own_emulator_and_variable() {
        let dir = tempfile::tempdir().unwrap();
        let fake = fake_executable(dir.path(), "qemu-system-aarch64");
        // $QEMU is the host's emulator: an Arm guest never takes it.
        let host_qemu = |name: &str| (name == "QEMU").then(|| OsString::from("/usr/bin/true"));
        let found = find_in(
            BinaryKind::System,
            Arch::Aarch64,
            None,
            &host_qemu,
            dir.path().as_os_str(),
        );
        assert_eq!(found.unwrap(), fake);
        let err = find_in(
            BinaryKind::Destination,
            Arch::Aarch64,
            None,
            &host_qemu,
            &OsString::from("/nonexistent"),
        )
        .unwrap_err()
        .to_string();
        for part in [
            "qemu-system-aarch64 on PATH",
            "apt-get install qemu-system-arm",
            "QEMU_DST_AARCH64",
        ] {
            assert!(err.contains(part), "{part} missing from: {err}");
        }
        assert!(!err.contains("qemu-kvm"), "{err}");
    }

    #[test]
    fn a_machine_type_is_checked_without_its_properties() {
        let probe = Probe {
            path: "/usr/bin/qemu-system-x86_64".into(),
            version: Version {
                major: 7,
                minor: 2,
                micro: 22,
            },
            version_line: String::new(),
            accelerators: vec!["tcg".into()],
            machines: vec!["pc-q35-7.2".into()],
            machine_aliases: vec![("q35".into(), "pc-q35-7.2".into())],
        };
        assert!(probe.check_machine("q35,smm=off", Arch::X86_64).is_ok());
        assert!(probe.check_machine("pc-q35-7.2", Arch::X86_64).is_ok());
        let err = probe
            .check_machine("virt", Arch::Aarch64)
            .unwrap_err()
            .to_string();
        for part in [
            "`virt`",
            "qemu-system-aarch64",
            "apt-get install qemu-system-arm",
            "$QEMU_AARCH64",
        ] {
            assert!(err.contains(part), "{part} missing from: {err}");
        }
    }

    #[test]
    fn a_binary_that_is_not_qemu_is_refused() {
        let err = probe(Path::new("/bin/true")).unwrap_err();
        assert!(matches!(err, Error::NotQemu { .. }), "{err}");
        let err = probe(Path::new("/bin/echo")).unwrap_err().to_string();
        assert!(err.contains("does not look like QEMU"), "{err}");
    }
}
