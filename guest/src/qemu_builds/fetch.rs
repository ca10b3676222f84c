//! `virtest bootstrap --qemu VERSION`: a QEMU from Debian's backports of
//! the host's release, fetched by apt on a private state (the suite's
//! signed index, each package checked against its hash) and unpacked
//! into the cache with what the host lacks of its dependencies.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{QemuBuild, SYSTEM_EMULATOR, matches_version, root};
use crate::apt::{Apt, Package, Requirement};
use crate::error::{Error, IoContext, Result};

/// The packages a system emulator is made of, all at one version.
const QEMU_PACKAGES: [&str; 3] = ["qemu-system-x86", "qemu-system-common", "qemu-system-data"];

/// The keyring Debian's archive is signed with, where an apt source
/// names none.
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The directories of data files and firmware a build may bring, each
/// given to its QEMU with `-L` before the host's.
const DATA_DIRS: [&str; 3] = ["usr/share/qemu", "usr/share/seabios", "usr/lib/ipxe/qemu"];

/// Where Debian's backports of this host's release are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backports {
    /// The mirror (`http://deb.debian.org/debian`).
    pub mirror: String,
    /// The suite (`bookworm-backports`).
    pub suite: String,
    /// The keyring its index is signed with.
    pub keyring: PathBuf,
}

impl Backports {
    /// The backports of the host's release, on the mirror the host's own
    /// apt sources name for that release.
    pub fn of_host() -> Result<Backports> {
        let os_release = Path::new("/etc/os-release");
        let text = std::fs::read_to_string(os_release).io_context("reading", os_release)?;
        let codename = text
            .lines()
            .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
            .map(|c| c.trim_matches('"').to_string())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Error::QemuBuild {
                reason: "/etc/os-release names no VERSION_CODENAME: QEMU builds come from \
                         the backports of a Debian release"
                    .into(),
            })?;
        if let Some((mirror, keyring)) = host_source(&codename) {
            return Ok(Backports {
                mirror,
                suite: format!("{codename}-backports"),
                keyring,
            });
        }
        Err(Error::QemuBuild {
            reason: format!(
                "this host's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d) \
                 name no mirror for `{codename}`: add the release's own `deb` entry, \
                 whose mirror the backports are fetched from"
            ),
        })
    }

    /// Its line in a `sources.list`.
    fn sources_line(&self) -> String {
        self.sources_line_for(&self.suite)
    }

    /// The release these are the backports of (`bookworm`).
    pub fn release(&self) -> &str {
        self.suite.trim_end_matches("-backports")
    }

    /// The `sources.list` line of another suite (`bookworm-updates`) on
    /// the same mirror, signed by the same keyring.
    pub fn sources_line_for(&self, suite: &str) -> String {
        format!(
            "deb [signed-by={}] {} {suite} main\n",
            self.keyring.display(),
            self.mirror,
        )
    }
}

/// The mirror and keyring of the first `deb` entry for `suite`
/// (`bookworm-security`) in this host's apt sources, in either style;
/// Debian's keyring where the entry names none.
pub fn host_source(suite: &str) -> Option<(String, PathBuf)> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut parts: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        parts.sort();
        files.extend(parts);
    }
    files.into_iter().find_map(|file| {
        let text = std::fs::read_to_string(&file).ok()?;
        let found = match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => mirror_in_deb822(&text, suite),
            _ if file.ends_with("sources.list")
                || file.extension().is_some_and(|e| e == "list") =>
            {
                mirror_in_one_line(&text, suite)
            }
            _ => None,
        }?;
        Some((found.0, found.1.unwrap_or_else(|| DEBIAN_KEYRING.into())))
    })
}

/// The mirror (and keyring, if named) of the first `deb` line for suite
/// `codename` in a one-line-style `sources.list`.
fn mirror_in_one_line(text: &str, codename: &str) -> Option<(String, Option<PathBuf>)> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let rest = line.strip_prefix("deb ")?.trim();
        let (options, rest) = match rest.strip_prefix('[') {
            Some(bracketed) => bracketed.split_once(']')?,
            None => ("", rest),
        };
        let mut words = rest.split_whitespace();
        let (uri, suite) = (words.next()?, words.next()?);
        let keyring = options
            .split_whitespace()
            .find_map(|o| o.strip_prefix("signed-by="))
            .map(PathBuf::from);
        (suite == codename).then(|| (uri.trim_end_matches('/').to_string(), keyring))
    })
}

/// The mirror (and keyring, if named) of the first `deb` stanza with
/// suite `codename` in a deb822-style `.sources` file.
fn mirror_in_deb822(text: &str, codename: &str) -> Option<(String, Option<PathBuf>)> {
    text.split("\n\n").find_map(|stanza| {
        let field = |key: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().to_string())
            })
        };
        let enabled = field("Enabled").is_none_or(|v| v != "no");
        let debs = field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let suites = field("Suites")?;
        let ours = suites.split_whitespace().any(|s| s == codename);
        let uri = field("URIs")?.split_whitespace().next()?.to_string();
        (enabled && debs && ours).then(|| {
            (
                uri.trim_end_matches('/').to_string(),
                field("Signed-By").map(PathBuf::from),
            )
        })
    })
}

/// Fetches QEMU `version` (`10.0`: the newest `10.0.x` there) from
/// `backports` into the cache under `home`, unless it is there already,
/// and returns it. What the host lacks of its dependencies comes from
/// the backports too, or the error names it.
pub fn fetch(home: &Path, version: &str, backports: &Backports) -> Result<QemuBuild> {
    if let Some(build) = super::find(home, version) {
        return Ok(build);
    }
    let root = root(home);
    let state = root.join("apt");
    std::fs::create_dir_all(&state).io_context("creating", &state)?;
    crate::cache::ensure_writable(&root)?;
    // One fetch at a time, in any process; the one that waited finds
    // the build the other made.
    let lock_path = root.join("fetch.lock");
    let lock = std::fs::File::create(&lock_path).io_context("creating", &lock_path)?;
    lock.lock().io_context("locking", &lock_path)?;
    if let Some(build) = super::find(home, version) {
        return Ok(build);
    }
    let sources = state.join("sources.list");
    std::fs::write(&sources, backports.sources_line()).io_context("writing", &sources)?;
    let apt = Apt::private(&state);
    apt.update().map_err(|e| Error::QemuBuild {
        reason: format!(
            "the index of {} could not be fetched from {} (the mirror of this host's apt \
             sources): {e}",
            backports.suite, backports.mirror
        ),
    })?;
    let offered = match apt.versions(QEMU_PACKAGES[0]) {
        Err(Error::UnknownPackage { .. }) => Vec::new(),
        offered => offered?,
    };
    let Some(chosen) = offered
        .iter()
        .find(|p| matches_version(upstream(&p.version), version))
    else {
        let mut versions: Vec<&str> = offered.iter().map(|p| upstream(&p.version)).collect();
        versions.dedup();
        return Err(Error::QemuBuild {
            reason: format!(
                "{} offers no QEMU {version}; it has {}",
                backports.suite,
                match versions.is_empty() {
                    true => "none".to_string(),
                    false => versions.join(", "),
                }
            ),
        });
    };
    let mut packages = Vec::new();
    for name in QEMU_PACKAGES {
        let package = apt
            .versions(name)?
            .into_iter()
            .find(|p| p.version == chosen.version)
            .ok_or_else(|| Error::QemuBuild {
                reason: format!(
                    "{} has `{}` {} but not `{name}` at that version",
                    backports.suite, QEMU_PACKAGES[0], chosen.version
                ),
            })?;
        packages.push(package);
    }
    packages.extend(missing_on_host(&apt, &packages, &backports.suite)?);
    let build = upstream(&chosen.version).to_string();
    let staging = root.join(format!(".{build}.part-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let made = unpack(&apt, &packages, &staging)
        .and_then(|()| check(&staging, &build))
        .and_then(|()| write_files_list(&staging));
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let dir = root.join(&build);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staging, &dir).io_context("moving into place", &staging)?;
    tracing::info!(version = build, dir = %dir.display(), "fetched QEMU");
    Ok(QemuBuild {
        version: build,
        binary: dir.join("bin").join(SYSTEM_EMULATOR),
        dir,
    })
}

/// The upstream part of a Debian version: `1:10.0.2+ds-2~bpo12+1` is
/// `10.0.2`.
fn upstream(version: &str) -> &str {
    let version = version.split_once(':').map_or(version, |(_, v)| v);
    let end = version
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(version.len());
    version[..end].trim_end_matches('.')
}

/// The packages of `suite` that `packages` need and the host does not
/// have at a version that does; an error names what neither has.
fn missing_on_host(apt: &Apt, packages: &[Package], suite: &str) -> Result<Vec<Package>> {
    let ours = |name: &str| QEMU_PACKAGES.contains(&name);
    let mut fetched: Vec<Package> = Vec::new();
    let mut lacking = Vec::new();
    for requirement in packages.iter().flat_map(|p| &p.requirements) {
        if ours(&requirement.name) || fetched.iter().any(|p| p.name == requirement.name) {
            continue;
        }
        let host = installed_version(&requirement.name);
        if host.as_deref().is_some_and(|v| satisfies(v, requirement)) {
            continue;
        }
        let offered = match apt.versions(&requirement.name) {
            Ok(offered) => offered,
            Err(Error::UnknownPackage { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        match offered
            .into_iter()
            .find(|p| satisfies(&p.version, requirement))
        {
            Some(package) => fetched.push(package),
            None => lacking.push(match (&requirement.constraint, host) {
                (Some((op, version)), Some(host)) => {
                    format!("{} ({op} {version}; the host has {host})", requirement.name)
                }
                (Some((op, version)), None) => format!("{} ({op} {version})", requirement.name),
                (None, _) => requirement.name.clone(),
            }),
        }
    }
    if lacking.is_empty() {
        return Ok(fetched);
    }
    Err(Error::QemuBuild {
        reason: format!(
            "the QEMU of {suite} needs what neither this host nor {suite} has: {}; \
             install the host's own QEMU (apt-get install qemu-system-x86), which brings \
             its libraries",
            lacking.join(", ")
        ),
    })
}

/// The version of `name` installed on the host, if it is.
fn installed_version(name: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status} ${Version}", name])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.strip_prefix("installed ")?.trim();
    (out.status.success() && !version.is_empty()).then(|| version.to_string())
}

/// Whether `version` meets `requirement`'s constraint, as dpkg compares.
fn satisfies(version: &str, requirement: &Requirement) -> bool {
    let Some((op, wanted)) = &requirement.constraint else {
        return true;
    };
    Command::new("dpkg")
        .args(["--compare-versions", version, op, wanted])
        .status()
        .is_ok_and(|s| s.success())
}

/// Fetches and unpacks `packages` into `dir`, and writes the launcher.
fn unpack(apt: &Apt, packages: &[Package], dir: &Path) -> Result<()> {
    for package in packages {
        let deb = apt.fetch(package)?;
        apt.unpack(&deb, dir)?;
    }
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).io_context("creating", &bin)?;
    let launcher = bin.join(SYSTEM_EMULATOR);
    std::fs::write(&launcher, launcher_script(dir, packages)).io_context("writing", &launcher)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755))
        .io_context("making executable", &launcher)
}

/// The launcher of a build unpacked in `dir`: its system emulator with its
/// data files first (`-L`), its modules (`QEMU_MODULE_DIR`) and any
/// library it brought. It finds the build from its own path, so the
/// directory can move.
fn launcher_script(dir: &Path, packages: &[Package]) -> String {
    let triplet = format!("{}-linux-gnu", std::env::consts::ARCH);
    let mut env = format!("QEMU_MODULE_DIR=\"$prefix/usr/lib/{triplet}/qemu\" ");
    let has_libraries = std::fs::read_dir(dir.join("usr/lib").join(&triplet))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains(".so"));
    if has_libraries {
        env.push_str(&format!(
            "LD_LIBRARY_PATH=\"$prefix/usr/lib/{triplet}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\" "
        ));
    }
    let data: String = DATA_DIRS
        .iter()
        .filter(|d| dir.join(d).is_dir())
        .map(|d| format!(" -L \"$prefix/{d}\""))
        .collect();
    let names: Vec<String> = packages
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect();
    format!(
        "#!/bin/sh\n\
         # Written by `virtest bootstrap --qemu`: runs the QEMU unpacked beside it\n\
         # with its own data files and modules. Packages:\n\
         # {}\n\
         prefix=$(cd \"${{0%/*}}/..\" && pwd -P) || exit 127\n\
         {env}exec \"$prefix/usr/bin/{SYSTEM_EMULATOR}\"{data} \"$@\"\n",
        names.join(" ")
    )
}

/// Runs the build's `-version` and `-machine help`: it must start, on the
/// host's libraries, and be the version fetched.
fn check(dir: &Path, version: &str) -> Result<()> {
    let launcher = dir.join("bin").join(SYSTEM_EMULATOR);
    for args in [["-version", ""], ["-machine", "help"]] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let out = Command::new(&launcher)
            .args(&args)
            .output()
            .io_context("running", &launcher)?;
        let said = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || (args[0] == "-version" && !said.contains(version)) {
            return Err(Error::QemuBuild {
                reason: format!(
                    "the fetched QEMU {version} does not run here (`{} {}`): {}{}",
                    launcher.display(),
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim(),
                    said.trim()
                ),
            });
        }
    }
    Ok(())
}

/// Writes the build in `dir`'s list of files ([`FILES`](super::FILES)): each regular
/// file under `usr/` and `bin/`, with its size.
pub(super) fn write_files_list(dir: &Path) -> Result<()> {
    fn walk(dir: &Path, root: &Path, out: &mut String) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(&entry.path(), root, out)?;
            } else if kind.is_file() {
                let path = entry.path();
                let relative = path.strip_prefix(root).unwrap_or(&path);
                out.push_str(&format!(
                    "{} {}\n",
                    entry.metadata()?.len(),
                    relative.display()
                ));
            }
        }
        Ok(())
    }
    let mut list = String::new();
    for top in ["usr", "bin"] {
        let top = dir.join(top);
        if top.is_dir() {
            walk(&top, dir, &mut list).io_context("listing", &top)?;
        }
    }
    let path = dir.join(super::FILES);
    std::fs::write(&path, list).io_context("writing", &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_versions_drop_epoch_and_debian_parts() {
        assert_eq!(upstream("1:10.0.2+ds-2+deb13u1~bpo12+1"), "10.0.2");
        assert_eq!(upstream("1:7.2+dfsg-7+deb12u18+b3"), "7.2");
        assert_eq!(upstream("1.16.3-2~bpo12+1"), "1.16.3");
    }

    #[test]
    fn the_mirror_is_read_from_either_style_of_sources() {
        let deb822 = "Types: deb\n\
                      URIs: http://deb.debian.org/debian\n\
                      Suites: bookworm bookworm-updates\n\
                      Components: main\n\
                      Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
                      \n\
                      Types: deb\n\
                      URIs: http://deb.debian.org/debian-security\n\
                      Suites: bookworm-security\n";
        assert_eq!(
            mirror_in_deb822(deb822, "bookworm"),
            Some((
                "http://deb.debian.org/debian".into(),
                Some(DEBIAN_KEYRING.into())
            ))
        );
        assert_eq!(mirror_in_deb822(deb822, "trixie"), None);
        let disabled = deb822.replace(
            "Types: deb\nURIs: http://deb.debian.org/debian\n",
            "Types: deb\nEnabled: no\nURIs: http://deb.debian.org/debian\n",
        );
        assert_eq!(mirror_in_deb822(&disabled, "bookworm"), None);
        let one_line = "# deb http://old.example/debian bookworm main\n\
                        deb-src http://src.example/debian bookworm main\n\
                        deb http://security.debian.org/debian-security bookworm-security main\n\
                        deb [arch=amd64 signed-by=/etc/k.gpg] http://ftp.de.debian.org/debian/ bookworm main\n";
        assert_eq!(
            mirror_in_one_line(one_line, "bookworm"),
            Some((
                "http://ftp.de.debian.org/debian".into(),
                Some("/etc/k.gpg".into())
            ))
        );
        let backports = Backports {
            mirror: "http://ftp.de.debian.org/debian".into(),
            suite: "bookworm-backports".into(),
            keyring: DEBIAN_KEYRING.into(),
        };
        assert_eq!(
            backports.sources_line(),
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://ftp.de.debian.org/debian bookworm-backports main\n"
        );
    }

    #[test]
    fn a_version_constraint_is_compared_as_dpkg_does() {
        let seabios = Requirement {
            name: "seabios".into(),
            constraint: Some((">>".into(), "1.16.3-1~".into())),
        };
        assert!(!satisfies("1.16.2-1", &seabios));
        assert!(satisfies("1.16.3-2~bpo12+1", &seabios));
        let any = Requirement {
            name: "ipxe-qemu".into(),
            constraint: None,
        };
        assert!(satisfies("1.0", &any));
    }
}
