//! Debian packages as a source of guest files: the candidate version from
//! `apt-cache`, the `.deb` from `apt-get download` (kept in the cache so it
//! is fetched once), unpacked with `dpkg-deb -x`. Nothing else is
//! downloaded.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::command;
use crate::error::{Error, IoContext, Result};

/// A package as apt would install it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The package name.
    pub name: String,
    /// The candidate version.
    pub version: String,
    /// The names in its `Depends` (first alternative of each).
    pub depends: Vec<String>,
    /// Its `Depends` with their version constraints (first alternative
    /// of each).
    pub requirements: Vec<Requirement>,
}

/// One entry of a `Depends` field: a package, and the versions of it
/// that do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The package name.
    pub name: String,
    /// The relation and version (`(">=", "1.16.3-1~")`), if any.
    pub constraint: Option<(String, String)>,
}

/// The apt and dpkg programs, and the directory downloaded `.deb`s are
/// kept in.
#[derive(Debug, Clone)]
pub struct Apt {
    /// `apt-get`.
    pub apt_get: PathBuf,
    /// `apt-cache`.
    pub apt_cache: PathBuf,
    /// `dpkg-deb`.
    pub dpkg_deb: PathBuf,
    /// `dpkg-query`.
    pub dpkg_query: PathBuf,
    /// Where `.deb` files are kept.
    pub download_dir: PathBuf,
    /// A private state of apt's own ([`Apt::private`]), or the host's.
    pub state: Option<PathBuf>,
    /// The Debian architecture packages are for (`arm64`), when not the
    /// host's ([`Apt::foreign`]).
    pub architecture: Option<String>,
}

/// Where apt keeps its binary package cache for our calls. Hosts (Debian
/// container images among them) often disable the system one, which makes
/// every `apt-cache` call re-read all package lists: 1.3 s instead of 0.4 s.
fn pkgcache_args(download_dir: &Path) -> [String; 4] {
    let dir = download_dir.join("apt-cache");
    [
        "-o".into(),
        format!(
            "Dir::Cache::pkgcache={}",
            dir.join("pkgcache.bin").display()
        ),
        "-o".into(),
        format!(
            "Dir::Cache::srcpkgcache={}",
            dir.join("srcpkgcache.bin").display()
        ),
    ]
}

impl Apt {
    /// The system's apt and dpkg, keeping packages in `download_dir`.
    pub fn system(download_dir: PathBuf) -> Apt {
        Apt {
            apt_get: "apt-get".into(),
            apt_cache: "apt-cache".into(),
            dpkg_deb: "dpkg-deb".into(),
            dpkg_query: "dpkg-query".into(),
            download_dir,
            state: None,
            architecture: None,
        }
    }

    /// The system's apt and dpkg on a state of their own under `dir`:
    /// the sources in `dir/sources.list` only, their package lists, and
    /// no installed packages, so that every candidate is from those
    /// sources. `.deb`s are kept in `dir/debs`.
    pub fn private(dir: &Path) -> Apt {
        Apt {
            state: Some(dir.to_path_buf()),
            ..Apt::system(dir.join("debs"))
        }
    }

    /// [`Apt::private`] for packages of another architecture
    /// (`arm64`), without adding it to the host's dpkg: apt is told the
    /// architecture is that one alone, so every name means its package
    /// of that architecture, and none is installed on the host.
    pub fn foreign(dir: &Path, architecture: &str) -> Apt {
        Apt {
            architecture: Some(architecture.to_string()),
            ..Apt::private(dir)
        }
    }

    /// The `-o` arguments for every apt call: the package cache, and a
    /// private state's directories.
    fn settings(&self) -> Vec<String> {
        let mut args = pkgcache_args(&self.download_dir).to_vec();
        if let Some(dir) = &self.state {
            for (key, path) in [
                ("Dir::Etc::SourceList", "sources.list"),
                ("Dir::Etc::SourceParts", "sources.list.d"),
                ("Dir::State::Lists", "lists"),
                ("Dir::State::status", "status"),
                ("Dir::Cache", "cache"),
            ] {
                args.push("-o".into());
                args.push(format!("{key}={}", dir.join(path).display()));
            }
        }
        if let Some(arch) = &self.architecture {
            for key in ["APT::Architecture", "APT::Architectures"] {
                args.push("-o".into());
                args.push(format!("{key}={arch}"));
            }
        }
        args
    }

    /// `apt-get update` of a private state ([`Apt::private`]): reads its
    /// sources' signed indexes into its lists; an index that cannot be
    /// fetched or verified is an error. The host's lists are the host's to
    /// update: on its state this does nothing.
    pub fn update(&self) -> Result<()> {
        let Some(state) = self.state.as_deref() else {
            return Ok(());
        };
        for dir in [
            "debs",
            "sources.list.d",
            "lists/partial",
            "cache/archives/partial",
        ] {
            let path = state.join(dir);
            std::fs::create_dir_all(&path).io_context("creating", &path)?;
        }
        let status = state.join("status");
        if !status.exists() {
            std::fs::write(&status, "").io_context("writing", &status)?;
        }
        run(
            Command::new(&self.apt_get).args(self.settings()).args([
                "update",
                "-q",
                "--error-on=any",
            ]),
            "apt",
            false,
        )
        .map(drop)
    }

    /// [`Apt::update`] unless a private state's lists were fetched
    /// already: a build from them needs no network.
    pub fn update_once(&self) -> Result<()> {
        let Some(state) = self.state.as_deref() else {
            return Ok(());
        };
        let fetched = std::fs::read_dir(state.join("lists")).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        });
        if fetched { Ok(()) } else { self.update() }
    }

    /// Every version of `name` the sources offer, newest first.
    pub fn versions(&self, name: &str) -> Result<Vec<Package>> {
        let _ = std::fs::create_dir_all(self.download_dir.join("apt-cache"));
        let out = run(
            Command::new(&self.apt_cache)
                .args(self.settings())
                .args(["show", name]),
            "apt",
            true,
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.split("\n\n").filter_map(parse_stanza).collect())
    }

    /// The candidate version of `name` and its dependencies.
    pub fn candidate(&self, name: &str) -> Result<Package> {
        Ok(self.candidates(&[name])?.remove(0))
    }

    /// The candidates of several packages, in one `apt-cache` call.
    pub fn candidates(&self, names: &[&str]) -> Result<Vec<Package>> {
        let _ = std::fs::create_dir_all(self.download_dir.join("apt-cache"));
        let out = run(
            Command::new(&self.apt_cache)
                .args(self.settings())
                .args(["show", "--no-all-versions"])
                .args(names),
            "apt",
            true,
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let stanzas: Vec<Package> = text.split("\n\n").filter_map(parse_stanza).collect();
        names
            .iter()
            .map(|name| {
                stanzas
                    .iter()
                    .find(|p| p.name == *name)
                    .cloned()
                    .ok_or_else(|| Error::UnknownPackage {
                        package: name.to_string(),
                    })
            })
            .collect()
    }

    /// Whether `name` is installed on the host (for another
    /// architecture's packages, never).
    pub fn is_installed(&self, name: &str) -> bool {
        self.architecture.is_none()
            && Command::new(&self.dpkg_query)
                .args(["-W", "-f", "${db:Status-Status}", name])
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout == b"installed")
    }

    /// The `.deb` of `package`, downloaded unless already kept.
    pub fn fetch(&self, package: &Package) -> Result<PathBuf> {
        let kept = self.download_dir.join(format!(
            "{}_{}.deb",
            package.name,
            package.version.replace(':', "%3a")
        ));
        if kept.is_file() {
            return Ok(kept);
        }
        // Download into a private directory, then move into place, so a
        // cut download never looks like a kept package.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let staging = self.download_dir.join(format!(
            ".download-{}-{}-{n}",
            package.name,
            std::process::id()
        ));
        std::fs::create_dir_all(&staging).io_context("creating", &staging)?;
        let spec = format!("{}={}", package.name, package.version);
        let result = run(
            Command::new(&self.apt_get)
                .args(self.settings())
                .args(["download", "-q", &spec])
                .current_dir(&staging),
            "apt",
            false,
        )
        .and_then(|_| {
            let deb = std::fs::read_dir(&staging)
                .io_context("listing", &staging)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|e| e == "deb"))
                .ok_or_else(|| Error::UnknownPackage {
                    package: spec.clone(),
                })?;
            std::fs::rename(&deb, &kept).io_context("moving", &deb)
        });
        let _ = std::fs::remove_dir_all(&staging);
        result.map(|()| kept)
    }

    /// Unpacks a `.deb`'s files under `dest`.
    pub fn unpack(&self, deb: &Path, dest: &Path) -> Result<()> {
        std::fs::create_dir_all(dest).io_context("creating", dest)?;
        run(
            Command::new(&self.dpkg_deb).arg("-x").arg(deb).arg(dest),
            "dpkg",
            false,
        )
        .map(drop)
    }

    /// Streams the regular files of a `.deb` to `visit`, each with its
    /// path (`boot/...`, no leading `./`), reading the archive once.
    pub fn stream_files(
        &self,
        deb: &Path,
        mut visit: impl FnMut(&Path, &mut dyn Read) -> Result<()>,
    ) -> Result<()> {
        let mut cmd = Command::new(&self.dpkg_deb);
        cmd.arg("--fsys-tarfile")
            .arg(deb)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| command::spawn_error(&self.dpkg_deb.display().to_string(), "dpkg", e))?;
        let stdout = child.stdout.take().expect("piped");
        let streamed = for_each_file(
            std::io::BufReader::with_capacity(1 << 20, stdout),
            deb,
            &mut visit,
        );
        let output = child
            .wait_with_output()
            .io_context("running", &self.dpkg_deb)?;
        if !output.status.success() && streamed.is_ok() {
            return Err(Error::CommandFailed {
                command: format!(
                    "{} --fsys-tarfile {}",
                    self.dpkg_deb.display(),
                    deb.display()
                ),
                status: output.status,
                stderr: command::tail(&String::from_utf8_lossy(&output.stderr), 800),
            });
        }
        streamed
    }
}

/// Calls `visit` for each regular file of a tar stream, with its path
/// made relative (no `./`, no `..`).
fn for_each_file(
    stream: impl Read,
    deb: &Path,
    visit: &mut dyn FnMut(&Path, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries().io_context("reading package", deb)? {
        let mut entry = entry.io_context("reading package", deb)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry
            .path()
            .io_context("reading package", deb)?
            .into_owned();
        let relative: PathBuf = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        if !relative.as_os_str().is_empty() {
            visit(&relative, &mut entry)?;
        }
    }
    Ok(())
}

/// Writes `reader` to `root/relative`, creating directories.
pub fn write_under(root: &Path, relative: &Path, reader: &mut dyn Read) -> Result<()> {
    let target = root.join(relative);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).io_context("creating", parent)?;
    }
    let mut file = std::fs::File::create(&target).io_context("writing", &target)?;
    std::io::copy(reader, &mut file).io_context("writing", &target)?;
    Ok(())
}

/// A package from one `apt-cache show` stanza.
fn parse_stanza(stanza: &str) -> Option<Package> {
    let field = |key: &str| {
        stanza
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
    };
    Some(Package {
        name: field("Package")?.to_string(),
        version: field("Version")?.to_string(),
        depends: field("Depends").map(parse_depends).unwrap_or_default(),
        requirements: field("Depends").map(parse_requirements).unwrap_or_default(),
    })
}

/// A `Depends` field's entries, the first alternative of each, with its
/// version constraint and without architecture qualifiers.
fn parse_requirements(field: &str) -> Vec<Requirement> {
    field
        .split(',')
        .filter_map(|dep| {
            let first = dep.split('|').next()?.trim();
            let (name, rest) = first.split_once('(').unwrap_or((first, ""));
            let name = name.trim().split(':').next()?.to_string();
            let constraint = rest
                .trim_end_matches(')')
                .split_once(' ')
                .map(|(op, version)| (op.trim().to_string(), version.trim().to_string()));
            (!name.is_empty()).then_some(Requirement { name, constraint })
        })
        .collect()
}

/// Names from a `Depends` field: the first alternative of each entry,
/// without version or architecture qualifiers.
fn parse_depends(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter_map(|dep| {
            let first = dep.split('|').next()?.trim();
            let name = first.split([' ', '(']).next()?;
            let name = name.split(':').next()?;
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// Runs a command; apt's own "no such package" failures become
/// [`Error::UnknownPackage`] when `quiet_failure_is_unknown`.
fn run(cmd: &mut Command, package: &'static str, quiet_failure_is_unknown: bool) -> Result<Output> {
    match command::run(cmd.env("LC_ALL", "C"), package) {
        Err(Error::CommandFailed { stderr, .. })
            if quiet_failure_is_unknown
                && (stderr.contains("No packages found")
                    || stderr.contains("Unable to locate")) =>
        {
            let package = cmd
                .get_args()
                .last()
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default();
            Err(Error::UnknownPackage { package })
        }
        result => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_keep_first_alternatives_without_qualifiers() {
        let field = "libc6 (>= 2.34), libcrypt1 (>= 1:4.1.0), initramfs-tools (>= 0.120) | linux-initramfs-tool, python3:any";
        assert_eq!(
            parse_depends(field),
            ["libc6", "libcrypt1", "initramfs-tools", "python3"]
        );
    }

    #[test]
    fn requirements_keep_their_version_constraints() {
        let field = "libc6 (>= 2.34), qemu-system-data (>> 1:10.0.2+ds~), seabios (>> 1.16.3-1~) | x, ipxe-qemu, python3:any";
        let requirement = |name: &str, constraint: Option<(&str, &str)>| Requirement {
            name: name.into(),
            constraint: constraint.map(|(op, v)| (op.into(), v.into())),
        };
        assert_eq!(
            parse_requirements(field),
            [
                requirement("libc6", Some((">=", "2.34"))),
                requirement("qemu-system-data", Some((">>", "1:10.0.2+ds~"))),
                requirement("seabios", Some((">>", "1.16.3-1~"))),
                requirement("ipxe-qemu", None),
                requirement("python3", None),
            ]
        );
    }

    #[test]
    fn streaming_visits_regular_files_with_relative_paths() {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in [
            ("./boot/vmlinuz-6", "k"),
            ("./lib/modules/6/kernel/a.ko", "m"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, path, data.as_bytes())
                .unwrap();
        }
        let bytes = builder.into_inner().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let mut seen = Vec::new();
        for_each_file(&bytes[..], Path::new("x.deb"), &mut |path, reader| {
            seen.push(path.to_path_buf());
            write_under(dest.path(), path, reader)
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                PathBuf::from("boot/vmlinuz-6"),
                PathBuf::from("lib/modules/6/kernel/a.ko")
            ]
        );
        assert_eq!(
            std::fs::read_to_string(dest.path().join("boot/vmlinuz-6")).unwrap(),
            "k"
        );
    }

    #[test]
    fn another_architecture_is_apt_s_only_one_and_never_the_host_s() {
        let state = Path::new("/cache/packages/arm64");
        let apt = Apt::foreign(state, "arm64");
        let settings = apt.settings().join(" ");
        assert!(settings.contains("APT::Architecture=arm64"), "{settings}");
        assert!(settings.contains("APT::Architectures=arm64"), "{settings}");
        assert!(
            settings.contains("Dir::State::status=/cache/packages/arm64/status"),
            "{settings}"
        );
        // dpkg knows the host's own packages: none of them is this one.
        assert!(Apt::system("/tmp".into()).is_installed("dpkg"));
        assert!(!apt.is_installed("dpkg"));
    }

    #[test]
    fn stanzas_parse() {
        let text = "Package: dropbear-bin\nVersion: 2022.83-1+deb12u3\nDepends: libc6 (>= 2.34), zlib1g\nDescription: x\n y\n";
        let p = parse_stanza(text).unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_str()),
            ("dropbear-bin", "2022.83-1+deb12u3")
        );
        assert_eq!(p.depends, ["libc6", "zlib1g"]);
        assert_eq!(parse_stanza("Description: no package\n"), None);
    }

    #[test]
    fn a_missing_apt_names_its_package() {
        let mut apt = Apt::system(std::env::temp_dir());
        apt.apt_cache = "/nonexistent/apt-cache".into();
        let err = apt.candidate("busybox-static").unwrap_err();
        assert!(
            matches!(err, Error::ToolMissing { package: "apt", .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("install Debian package `apt`"),
            "{err}"
        );
    }
}
