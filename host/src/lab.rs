//! Simulated hosts on this machine: a [`Lab`] is a switch (a bridge in a
//! network namespace of its own) with a veth link to the test's side;
//! each host it makes is a network namespace with its own veth link to
//! the switch, its own address, its own sshd and its own storage (or,
//! with [`Lab::share_storage`], this machine's). The
//! test reaches a host over SSH as it would a real one, and migrations
//! cross the links, which can be slowed, made lossy or cut
//! ([`Host::link`]).
//!
//! Everything is held by processes of this one (see `netns`), so it all
//! goes when the test's process ends, even by SIGKILL. Needs root.

mod netns;
mod sshd;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::host::{Host, HostDirs};
use crate::link::Link;
use crate::process::Process;
use crate::ssh::{Ssh, SshTarget};

pub(crate) use netns::Namespace;

/// The private range the labs' links use: lab `n` has `10.251.n.0/24`,
/// the test's side `.1`, its hosts `.10` on.
const RANGE: &str = "10.251";

/// How long logging into a fresh simulated host may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);

/// A switch for simulated hosts, and the test's link to it. Hosts it
/// made keep it alive.
#[derive(Debug, Clone)]
pub struct Lab(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Which `10.251.n.0/24` is this lab's.
    number: u8,
    dir: PathBuf,
    /// The lab's login key (private half), taken by every host's sshd.
    key: PathBuf,
    known_hosts: PathBuf,
    hosts: Mutex<Vec<String>>,
    switch: Arc<Namespace>,
    /// Whether hosts added from now on share this machine's storage.
    shared_storage: AtomicBool,
}

/// What keeps a simulated host alive.
struct Parts {
    // Declared in the order they go: the server, then its namespace,
    // then the switch it hangs on.
    _sshd: Process,
    _namespace: Arc<Namespace>,
    _lab: Lab,
    /// Its runtime directory, removed with it.
    runtime_dir: PathBuf,
}

impl Drop for Parts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

impl Lab {
    /// A new switch, its files (keys, sshd configurations and logs, each
    /// host's storage) in `dir`, and the test's side of its link
    /// (`vtlab<n>`, `10.251.n.1/24`).
    pub async fn new(dir: &Path) -> Result<Lab> {
        if !rustix::process::geteuid().is_root() {
            return Err(Error::NeedsRoot {
                why: "this process does not run as root".into(),
            });
        }
        create_dir(dir)?;
        let switch = Arc::new(Namespace::new("lab").await?);
        switch
            .run(&["ip", "link", "add", "br0", "type", "bridge"])
            .await?;
        switch.run(&["ip", "link", "set", "br0", "up"]).await?;
        let number = claim_number(&switch).await?;
        let test_side = format!("vtlab{number}");
        let address = format!("{RANGE}.{number}.1/24");
        let here = netns::run_here;
        here(&["ip", "addr", "add", &address, "dev", &test_side]).await?;
        here(&["ip", "link", "set", &test_side, "up"]).await?;
        switch
            .run(&["ip", "link", "set", "test", "master", "br0", "up"])
            .await?;
        let key = dir.join("id_ed25519");
        sshd::key_pair(&key, "lab").await?;
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, "").map_err(|source| Error::Io {
            what: "writing",
            path: known_hosts.clone(),
            source,
        })?;
        tracing::info!(number, dir = %dir.display(), "simulated-host lab ready");
        Ok(Lab(Arc::new(Inner {
            number,
            dir: dir.to_path_buf(),
            key,
            known_hosts,
            hosts: Mutex::new(Vec::new()),
            switch,
            shared_storage: AtomicBool::new(false),
        })))
    }

    /// The test's own host, reached by the lab's hosts at the test's
    /// side of the link.
    pub fn local(&self) -> Host {
        Host::local_at(Some(format!("{RANGE}.{}.1", self.0.number)))
    }

    /// The lab's address range (`10.251.n.0/24`).
    pub fn range(&self) -> String {
        format!("{RANGE}.{}.0/24", self.0.number)
    }

    /// Makes the hosts added from now on share this machine's storage
    /// (as NFS would: they see its files at their paths), or, with
    /// `false`, have storage of their own (the default): a VM moving to
    /// one gets its files copied there.
    pub fn share_storage(&self, shared: bool) {
        self.0.shared_storage.store(shared, Ordering::Relaxed);
    }

    /// Makes host `name` (letters, digits and `-`, at most 12): its
    /// namespace and link, address, sshd and storage, and logs into it.
    pub async fn add_host(&self, name: &str) -> Result<Host> {
        check_name(name)?;
        let index = {
            let mut hosts = self.0.hosts.lock().expect("hosts lock");
            if hosts.iter().any(|h| h == name) {
                return Err(Error::Lab {
                    host: name.into(),
                    step: "add_host".into(),
                    said: "the lab has a host of that name already".into(),
                });
            }
            hosts.push(name.to_string());
            hosts.len() + 9
        };
        let address = format!("{RANGE}.{}.{index}", self.0.number);
        let dir = self.0.dir.join(name);
        let storage = dir.join("storage");
        create_dir(&storage)?;
        let namespace = Arc::new(Namespace::new(name).await?);
        let switch_side = format!("h-{name}");
        let pid = namespace.pid().to_string();
        self.0
            .switch
            .run(&[
                "ip",
                "link",
                "add",
                &switch_side,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &pid,
            ])
            .await?;
        self.0
            .switch
            .run(&["ip", "link", "set", &switch_side, "master", "br0", "up"])
            .await?;
        namespace
            .run(&["ip", "addr", "add", &format!("{address}/24"), "dev", "eth0"])
            .await?;
        namespace.run(&["ip", "link", "set", "eth0", "up"]).await?;
        namespace.run(&["ip", "link", "set", "lo", "up"]).await?;
        let authorized = self.0.key.with_extension("pub");
        let sshd = sshd::start(&namespace, name, &address, &dir, &authorized).await?;
        let host_key =
            std::fs::read_to_string(dir.join("ssh_host_ed25519_key.pub")).map_err(|source| {
                Error::Io {
                    what: "reading",
                    path: dir.join("ssh_host_ed25519_key.pub"),
                    source,
                }
            })?;
        self.add_known_host(&address, host_key.trim())?;
        let target = SshTarget {
            name: name.to_string(),
            address: address.clone(),
            port: 22,
            user: "root".into(),
            key: self.0.key.clone(),
            known_hosts: Some(self.0.known_hosts.clone()),
            user_config: false,
        };
        // Sockets need a short path; the lab's directory may be deep.
        let runtime_dir = std::env::temp_dir().join(format!("vt{}-{name}", self.0.number));
        let _ = std::fs::remove_dir_all(&runtime_dir);
        let ssh = Ssh::connect(target, &dir, LOGIN_TIMEOUT).await?;
        let link = Link::new(name, namespace.clone(), self.0.switch.clone(), switch_side);
        let parts = Parts {
            _sshd: sshd,
            _namespace: namespace,
            _lab: self.clone(),
            runtime_dir: runtime_dir.clone(),
        };
        let dirs = HostDirs {
            runtime_dir,
            storage_dir: (!self.0.shared_storage.load(Ordering::Relaxed)).then_some(storage),
            qemu: None,
        };
        Host::over_ssh(ssh, address, dirs, Some(link), Some(Box::new(parts))).await
    }

    fn add_known_host(&self, address: &str, key: &str) -> Result<()> {
        use std::io::Write;
        let path = &self.0.known_hosts;
        let io = |source| Error::Io {
            what: "writing",
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io)?;
        writeln!(file, "{address} {key}").map_err(io)
    }
}

/// Claims the first free lab number: the first whose test-side link
/// name (`vtlab<n>`) the kernel lets this lab create, atomically, so
/// parallel labs never share a range.
async fn claim_number(switch: &Namespace) -> Result<u8> {
    let pid = switch.pid().to_string();
    for number in 1..=250u8 {
        let name = format!("vtlab{number}");
        let created = netns::run_here(&[
            "ip", "link", "add", &name, "type", "veth", "peer", "name", "test", "netns", &pid,
        ])
        .await;
        match created {
            Ok(_) => return Ok(number),
            Err(Error::Lab { said, .. }) if said.contains("exists") => continue,
            Err(other) => return Err(other),
        }
    }
    Err(Error::Lab {
        host: "lab".into(),
        step: "ip link add vtlab<n>".into(),
        said: "all 250 lab numbers are taken".into(),
    })
}

fn check_name(name: &str) -> Result<()> {
    let fits = !name.is_empty()
        && name.len() <= 12
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    match fits {
        true => Ok(()),
        false => Err(Error::Lab {
            host: name.into(),
            step: "add_host".into(),
            said: "a host's name is 1 to 12 letters, digits or `-`".into(),
        }),
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        what: "creating",
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_must_fit_a_link_name() {
        assert!(check_name("b").is_ok());
        assert!(check_name("host-2").is_ok());
        for bad in ["", "a/b", "with space", "thirteen-char"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
