//! Private networks between VMs: a [`Network`] is one L2 segment, a UDP
//! multicast group on the host's loopback (`-netdev socket,mcast=...`):
//! every VM on it gets a second NIC that joins the group, so QEMU alone
//! is the switch. A migration's destination joins the same group, so a
//! migrated VM stays on its network; nothing leaves the host (loopback
//! only, TTL 1).
//!
//! Addresses are static and deterministic: network `index` of a test is
//! `10.10.index.0/24`, its members `.1`, `.2`, ... in the order they
//! joined (a hot-plugged NIC's address is free again once it is gone),
//! each with a MAC made the same way. Each login sets them in the guest
//! (the NIC is found by its MAC), so they
//! hold after a reboot too, and a ready snapshot of a VM on a network
//! serves the next run's.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// The first host address of a network's subnet.
const FIRST_HOST: u8 = 1;

/// The last host address of a network's subnet.
const LAST_HOST: u8 = 254;

/// One private L2 segment that VMs join before they power on (or
/// running, with [`crate::Hotplug::nic`]). Clones are the same network.
///
/// ```no_run
/// # async fn f(server: &mut virtest_vm::Vm, client: &mut virtest_vm::Vm) -> virtest_vm::Result<()> {
/// use virtest_vm::Network;
/// let lan = Network::new("lan", 0)?;
/// lan.join(server)?;
/// lan.join(client)?;
/// server.power_on().await?;
/// client.power_on().await?;
/// server.login_remote().await?;
/// let address = server.address(&lan).expect("joined");
/// client.login_remote().await?.run(&format!("ping -c 1 {address}")).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Network {
    name: String,
    index: u8,
    segment: SocketAddrV4,
    /// The VMs on it by name, with the host number of each one's
    /// address; shared by clones, so each address is given once.
    members: Arc<Mutex<Vec<(String, u8)>>>,
}

/// A VM's NIC on a [`Network`], as its command line and login use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkNic {
    /// The network's name.
    pub network: String,
    /// The multicast group and port of the segment.
    pub segment: SocketAddrV4,
    /// The NIC's MAC address.
    pub mac: String,
    /// The VM's address on the network.
    pub address: Ipv4Addr,
}

impl NetworkNic {
    /// The QEMU id of the NIC's netdev.
    pub fn netdev_id(&self) -> String {
        format!("net-{}", self.network)
    }
}

impl Network {
    /// A network named `name` (a letter, then letters, digits, `-` and
    /// `_`: it names QEMU devices), the `index`th of its test (0 to 255:
    /// its subnet is `10.10.index.0/24`), on a multicast group of its own.
    pub fn new(name: &str, index: u8) -> Result<Network> {
        let mut chars = name.chars();
        let fits = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !fits {
            return Err(Error::Network {
                network: name.to_string(),
                reason: "a network's name is a letter, then letters, digits, `-` and `_`".into(),
            });
        }
        Ok(Network {
            name: name.to_string(),
            index,
            segment: fresh_segment()?,
            members: Arc::default(),
        })
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network's subnet, `10.10.index.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.10.{}.0/24", self.index)
    }

    /// The multicast group and port that carry the network's frames.
    pub fn segment(&self) -> SocketAddrV4 {
        self.segment
    }

    /// The names of the VMs on the network, in the order they joined.
    pub fn members(&self) -> Vec<String> {
        let members = self.members.lock().expect("never poisoned");
        members.iter().map(|(name, _)| name.clone()).collect()
    }

    /// A NIC on the network for the VM `name`, which has `nics` already,
    /// with the lowest free address.
    pub(crate) fn next_nic<'a>(
        &self,
        name: &str,
        mut nics: impl Iterator<Item = &'a NetworkNic>,
    ) -> Result<NetworkNic> {
        let name = name.to_string();
        let refuse = |reason: String| Error::Network {
            network: self.name.clone(),
            reason,
        };
        let mut members = self.members.lock().expect("never poisoned");
        if members.iter().any(|(member, _)| *member == name) {
            return Err(refuse(format!("VM `{name}` is on it already")));
        }
        if nics.any(|n| n.network == self.name) {
            return Err(refuse(format!(
                "VM `{name}` is on another network of that name"
            )));
        }
        let free = (FIRST_HOST..=LAST_HOST).find(|n| !members.iter().any(|(_, host)| host == n));
        let Some(host) = free else {
            return Err(refuse(format!(
                "it holds {} VMs at most",
                LAST_HOST - FIRST_HOST + 1
            )));
        };
        members.push((name, host));
        Ok(NetworkNic {
            network: self.name.clone(),
            segment: self.segment,
            mac: format!("52:54:00:0a:{:02x}:{host:02x}", self.index),
            address: Ipv4Addr::new(10, 10, self.index, host),
        })
    }

    /// Takes `vm_name` off the network (its hot-plugged NIC is gone, or
    /// never came): its address is free again.
    pub(crate) fn release(&self, vm_name: &str) {
        let mut members = self.members.lock().expect("never poisoned");
        members.retain(|(member, _)| member != vm_name);
    }
}

/// A multicast group and port no other network on this host is likely to
/// use: a random group of the organization-local scope (239.192.0.0/14)
/// and a random port above 1024. Two networks that drew the same pair
/// would share frames, a chance of one in about 2^32.
fn fresh_segment() -> Result<SocketAddrV4> {
    let mut bytes = [0u8; 5];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    read.map_err(|source| Error::Io {
        what: "drawing a network's multicast group from",
        path: "/dev/urandom".into(),
        source,
    })?;
    let group = Ipv4Addr::new(239, 192 | (bytes[0] & 0x03), bytes[1], bytes[2].max(1));
    let port = 1025 + u16::from_be_bytes([bytes[3], bytes[4]]) % (u16::MAX - 1025);
    Ok(SocketAddrV4::new(group, port))
}

/// The shell command that gives each NIC of `nics` its address, finding
/// it by MAC; it works in busybox's `sh` and in bash, with busybox's `ip`
/// and iproute2's.
pub(crate) fn address_script(nics: &[NetworkNic]) -> String {
    let mut script = String::new();
    for nic in nics {
        script.push_str(&format!(
            "n=; for d in /sys/class/net/*; do [ \"$(cat \"$d/address\")\" = {mac} ] && n=${{d##*/}}; done; \
             [ -n \"$n\" ] || {{ echo 'no interface has MAC {mac}' >&2; exit 1; }}; \
             ip link set dev \"$n\" up && ip addr replace {address}/24 dev \"$n\" || exit 1; ",
            mac = nic.mac,
            address = nic.address,
        ));
    }
    script.push_str("true");
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_organization_local_groups() {
        for _ in 0..100 {
            let segment = fresh_segment().unwrap();
            let [a, b, _, d] = segment.ip().octets();
            assert_eq!((a, b & 0xfc), (239, 192), "{segment}");
            assert_ne!(d, 0);
            assert!(segment.port() > 1024);
        }
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "two words", "a,b", "x=y", "1lan", "-lan"] {
            assert!(Network::new(bad, 0).is_err(), "{bad:?}");
        }
        let lan = Network::new("lan-1", 3).unwrap();
        assert_eq!(lan.subnet(), "10.10.3.0/24");
    }

    #[test]
    fn the_address_script_names_each_mac_and_address() {
        let nic = NetworkNic {
            network: "lan".into(),
            segment: "239.192.1.2:5000".parse().unwrap(),
            mac: "52:54:00:0a:00:01".into(),
            address: Ipv4Addr::new(10, 10, 0, 1),
        };
        let script = address_script(&[nic]);
        assert!(script.contains("= 52:54:00:0a:00:01 ]"), "{script}");
        assert!(script.contains("ip addr replace 10.10.0.1/24"), "{script}");
    }
}
