//! `hosts.toml`: real hosts a test's `add_host(name)` reaches over SSH
//! instead of simulating them.
//!
//! ```toml
//! [hosts.b]
//! address = "192.0.2.10"         # or a name ssh resolves
//! user = "root"
//! key = "/home/me/.ssh/id_ed25519"
//! qemu = "/usr/bin/qemu-system-x86_64"
//! storage = "/var/lib/virtest"   # the host's own storage, or "shared"
//! # port = 22, known_hosts = "...", runtime = "/tmp/virtest-run"
//!
//! [local]                        # optional: this machine, as the hosts
//! address = "192.0.2.1"          # reach it (for a VM to migrate back)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::host::{Host, HostDirs};
use crate::ssh::{Ssh, SshTarget};

/// How long logging into a real host may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);

/// The hosts a `hosts.toml` names.
#[derive(Debug, Clone)]
pub struct HostsFile {
    path: PathBuf,
    hosts: BTreeMap<String, Entry>,
    local: Option<Local>,
}

/// This machine, as the hosts reach it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Local {
    address: String,
}

/// One host's entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    address: String,
    user: String,
    key: PathBuf,
    qemu: PathBuf,
    storage: Storage,
    #[serde(default = "default_port")]
    port: u16,
    known_hosts: Option<PathBuf>,
    runtime: Option<PathBuf>,
}

/// A host's `storage`: a directory of its own, or `"shared"`.
#[derive(Debug, Clone)]
enum Storage {
    Own(PathBuf),
    Shared,
}

impl<'de> Deserialize<'de> for Storage {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Storage, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "shared" => Ok(Storage::Shared),
            _ if text.starts_with('/') => Ok(Storage::Own(text.into())),
            _ => Err(serde::de::Error::custom(format!(
                "`{text}` is neither an absolute path nor `shared`"
            ))),
        }
    }
}

fn default_port() -> u16 {
    22
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    hosts: BTreeMap<String, Entry>,
    local: Option<Local>,
}

impl HostsFile {
    /// Reads `path`; a missing field or an unknown one is an error
    /// naming the host and the field.
    pub fn load(path: &Path) -> Result<HostsFile> {
        let refuse = |why: String| Error::HostsFile {
            path: path.to_path_buf(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| refuse(e.to_string()))?;
        let file: File = toml::from_str(&text).map_err(|e| refuse(e.to_string()))?;
        Ok(HostsFile {
            path: path.to_path_buf(),
            hosts: file.hosts,
            local: file.local,
        })
    }

    /// This machine, reached by the hosts at the address `[local]` gives
    /// (without one, a VM cannot migrate back here).
    pub fn local(&self) -> Host {
        Host::local_at(self.local.as_ref().map(|l| l.address.clone()))
    }

    /// Its hosts' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.hosts.keys().map(String::as_str)
    }

    /// Logs into host `name`, keeping the SSH log in `dir`, and checks
    /// that its QEMU is there.
    pub async fn connect(&self, name: &str, dir: &Path) -> Result<Host> {
        let entry = self.hosts.get(name).ok_or_else(|| Error::HostsFile {
            path: self.path.clone(),
            why: format!(
                "it names no host `{name}` (it names: {})",
                self.names().collect::<Vec<_>>().join(", ")
            ),
        })?;
        let target = SshTarget {
            name: name.to_string(),
            address: entry.address.clone(),
            port: entry.port,
            user: entry.user.clone(),
            key: entry.key.clone(),
            known_hosts: entry.known_hosts.clone(),
            user_config: true,
        };
        let ssh = Ssh::connect(target, dir, LOGIN_TIMEOUT).await?;
        let qemu = entry.qemu.to_string_lossy().into_owned();
        let found = ssh.run(&["test", "-x", &qemu]).await?;
        if !found.status.success() {
            return Err(Error::NoQemu {
                host: name.to_string(),
                qemu: entry.qemu.clone(),
            });
        }
        let runtime_dir = entry
            .runtime
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/virtest-{}", entry.user)));
        let dirs = HostDirs {
            runtime_dir,
            storage_dir: match &entry.storage {
                Storage::Own(dir) => Some(dir.clone()),
                Storage::Shared => None,
            },
            qemu: Some(entry.qemu.clone()),
        };
        Host::over_ssh(ssh, entry.address.clone(), dirs, None, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<HostsFile> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.toml");
        std::fs::write(&path, text).unwrap();
        HostsFile::load(&path)
    }

    const B: &str = "[hosts.b]\naddress = \"192.0.2.10\"\nuser = \"root\"\nkey = \"/k\"\nqemu = \"/usr/bin/qemu-system-x86_64\"\nstorage = \"/var/lib/virtest\"\n";

    #[test]
    fn a_full_entry_loads() {
        let file = load(B).unwrap();
        assert_eq!(file.names().collect::<Vec<_>>(), ["b"]);
        assert_eq!(file.hosts["b"].port, 22);
    }

    #[test]
    fn a_missing_or_unknown_field_names_the_host_and_the_field() {
        let error = load(&B.replace("user = \"root\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing field `user`"), "{error}");
        assert!(error.contains("hosts.b"), "{error}");
        let error = load(&format!("{B}colour = \"blue\"\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("colour"), "{error}");
        let error = load("[hosts.b\n").unwrap_err().to_string();
        assert!(error.contains("hosts.toml"), "{error}");
    }

    #[test]
    fn local_gives_this_machines_address() {
        assert_eq!(load(B).unwrap().local().address(), None);
        let file = load(&format!("{B}[local]\naddress = \"192.0.2.1\"\n")).unwrap();
        assert!(file.local().is_local());
        assert_eq!(file.local().address(), Some("192.0.2.1"));
    }

    #[test]
    fn storage_is_a_directory_or_shared() {
        let shared = load(&B.replace("\"/var/lib/virtest\"", "\"shared\"")).unwrap();
        assert!(matches!(shared.hosts["b"].storage, Storage::Shared));
        let own = load(B).unwrap();
        assert!(
            matches!(&own.hosts["b"].storage, Storage::Own(d) if d == Path::new("/var/lib/virtest"))
        );
        let error = load(&B.replace("\"/var/lib/virtest\"", "\"nfs\""))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`nfs` is neither an absolute path nor `shared`"),
            "{error}"
        );
        assert!(error.contains("line 6"), "{error}");
    }
}
