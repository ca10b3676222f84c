//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// What can go wrong while bootstrapping or loading a guest.
///
/// Messages name the failing step and its input, and say what to do; the
/// underlying cause is kept as the error's `source`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cache directory cannot be created or written.
    #[error("cache directory `{path}` cannot be written; set VIRTEST_HOME to a writable directory")]
    CacheNotWritable {
        /// The directory.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// No cache directory could be chosen.
    #[error("no cache directory: set VIRTEST_HOME, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    /// No usable kernel was found in any of the places looked at.
    #[error(
        "no Linux kernel found; give one in one of three ways: \
         (1) `--kernel PATH --modules DIR` (a bzImage or vmlinuz and its /lib/modules/<version> directory), \
         (2) install one on the host (`apt-get install linux-image-amd64`), \
         (3) let bootstrap fetch the package with apt-get (needs apt-get and `apt-get update`); \
         tried: {}",
        tried.join("; ")
    )]
    NoKernel {
        /// Each place looked at and why it did not do.
        tried: Vec<String>,
    },
    /// A component other than the kernel was not found.
    #[error("no {what} found; give one with `{flag}`, or install Debian package `{package}`; tried: {}", tried.join("; "))]
    MissingComponent {
        /// What was looked for ("static busybox").
        what: &'static str,
        /// The bootstrap option that gives it.
        flag: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
        /// Each place looked at and why it did not do.
        tried: Vec<String>,
    },
    /// A program bootstrap runs is not installed.
    #[error("`{program}` is not installed; install Debian package `{package}`")]
    ToolMissing {
        /// The program.
        program: String,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// A program bootstrap ran failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The tail of what it printed on stderr.
        stderr: String,
    },
    /// apt knows no package of that name.
    #[error("apt knows no package `{package}`; run `apt-get update` first")]
    UnknownPackage {
        /// The package name.
        package: String,
    },
    /// A kernel image could not be understood.
    #[error("kernel image `{path}`: {reason}")]
    KernelImage {
        /// The image.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A kernel module is missing from a modules directory.
    #[error("kernel module `{name}` is neither built in nor found under `{dir}`")]
    ModuleMissing {
        /// The module name.
        name: String,
        /// The modules directory searched.
        dir: PathBuf,
    },
    /// An ELF file (a binary, a library, a module) could not be read.
    #[error("`{path}` is not a readable ELF file: {reason}")]
    Elf {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A shared library a guest binary needs was found nowhere.
    #[error("shared library `{soname}` needed by `{binary}` not found; searched {}", searched.join(", "))]
    LibraryMissing {
        /// The library's soname.
        soname: String,
        /// The binary that needs it.
        binary: PathBuf,
        /// The places searched.
        searched: Vec<String>,
    },
    /// A key could not be generated, read or written.
    #[error("ssh key `{path}`")]
    Key {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ssh_key::Error,
    },
    /// A guest manifest is missing, unreadable or describes files that are
    /// not there as recorded.
    #[error("guest manifest `{path}`: {reason}; run `virtest bootstrap` to rebuild the guest")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A guest description is missing, does not parse, or is
    /// inconsistent.
    #[error("guest description `{path}`: {reason}")]
    Description {
        /// The `guest.toml`.
        path: PathBuf,
        /// What is wrong, with the key and line where known.
        reason: String,
    },
    /// An image's content is not what its description says.
    #[error(
        "the image at {url} has SHA-256 {got}, but its description says {expected}; nothing was kept"
    )]
    ImageHash {
        /// Where it came from.
        url: String,
        /// The hash the description gives.
        expected: String,
        /// The hash of what was downloaded.
        got: String,
    },
    /// An image could not be downloaded.
    #[error("downloading {url}: {reason}")]
    Download {
        /// Where from.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A step needs root.
    #[error("{what} needs root: run it as root (CI runs as root)")]
    NeedsRoot {
        /// The step.
        what: &'static str,
    },
    /// A QEMU build cannot be fetched or does not run.
    #[error("{reason}")]
    QemuBuild {
        /// Why, and what to do.
        reason: String,
    },
    /// Another architecture's packages have no source: they come from the
    /// host's Debian release, which its apt sources must name.
    #[error(
        "the {arch} guest's packages come from this host's Debian release, on the mirror its apt sources name: {reason}"
    )]
    NoPackageSource {
        /// The guest's architecture.
        arch: &'static str,
        /// Why there is none.
        reason: String,
    },
    /// A built-in guest was named that is not built yet.
    #[error("guest `{name}` is not built (no `{path}`): run `virtest bootstrap --guest {name}`")]
    NotBuilt {
        /// The guest's name.
        name: String,
        /// Its description, once built.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{action} `{path}`")]
    Io {
        /// What was being done ("reading", "writing").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path and an action to an [`io::Error`].
pub(crate) trait IoContext<T> {
    fn io_context(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn io_context(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            action,
            path: path.into(),
            source,
        })
    }
}
