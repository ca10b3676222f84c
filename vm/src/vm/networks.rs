//! A VM on private networks: joining one before its first power_on, its
//! address there, and the addresses each login sets in the guest.

use std::net::Ipv4Addr;

use virtest_remote::SshSession;

use super::Vm;
use crate::error::{Error, Result};
use crate::network::{Network, NetworkNic, address_script};

impl Network {
    /// Puts `vm`, still off, on the network: it gets a NIC on the segment
    /// and the next address, which this returns.
    pub fn join(&self, vm: &mut Vm) -> Result<Ipv4Addr> {
        if vm.has_started_qemu() {
            return Err(Error::Network {
                network: self.name().to_string(),
                reason: format!(
                    "VM `{}` has been powered on: VMs join a network before their first \
                     power_on (or hot-plug a NIC: vm.hotplug().nic)",
                    vm.name()
                ),
            });
        }
        let nic = self.next_nic(vm.name(), vm.nics())?;
        let address = nic.address;
        vm.join_network(nic);
        Ok(address)
    }
}

impl Vm {
    /// Adds a NIC on a network (for [`Network::join`], which checks).
    fn join_network(&mut self, nic: NetworkNic) {
        self.config.networks.push(nic);
    }

    /// The VM's address on `network`, if it joined it.
    pub fn address(&self, network: &Network) -> Option<Ipv4Addr> {
        self.nics()
            .find(|nic| nic.network == network.name() && nic.segment == network.segment())
            .map(|nic| nic.address)
    }

    /// The VM's NICs on private networks: those it started with, then
    /// hot-plugged ones.
    pub(crate) fn nics(&self) -> impl Iterator<Item = &NetworkNic> {
        self.config().networks.iter().chain(self.hotplugged.nics())
    }

    /// Gives the guest its address on each of its networks; every login
    /// does, so they hold after a reboot (setting one again is harmless).
    pub(crate) async fn set_network_addresses(&self, session: &SshSession) -> Result<()> {
        let nics: Vec<NetworkNic> = self.nics().cloned().collect();
        let script = address_script(&nics);
        let names = || {
            let names: Vec<&str> = nics.iter().map(|n| n.network.as_str()).collect();
            names.join(", ")
        };
        match session.run(&script).await {
            Ok(_) => {
                tracing::debug!(networks = names(), "set the guest's network addresses");
                Ok(())
            }
            Err(source) => Err(Error::Network {
                network: names(),
                reason: format!(
                    "the guest's address could not be set (it needs `ip` and /sys/class/net): {source}"
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VM that is never started, named `name`.
    fn vm(name: &str) -> Vm {
        let text = "[boot]\nkernel = \"vmlinux\"\n[login]\nuser = \"root\"\npassword = \"pw\"\n";
        let (guest, _) =
            virtest_guest::GuestDescription::parse(text, std::path::Path::new("/g/guest.toml"))
                .unwrap();
        let mut config = crate::VmConfig::new(guest);
        config.name = Some(name.into());
        Vm::new(config)
    }

    #[test]
    fn addresses_are_given_once_and_freed_on_release() {
        let lan = Network::new("lan", 2).unwrap();
        let clone = lan.clone();
        let (mut a, mut b) = (vm("a"), vm("b"));
        assert_eq!(lan.join(&mut a).unwrap(), Ipv4Addr::new(10, 10, 2, 1));
        assert_eq!(
            clone.join(&mut b).unwrap(),
            Ipv4Addr::new(10, 10, 2, 2),
            "clones share"
        );
        assert_eq!(b.config().networks[0].mac, "52:54:00:0a:02:02");
        let again = lan.join(&mut a).unwrap_err().to_string();
        assert!(again.contains("on it already"), "{again}");
        // A hot-plugged NIC that went away frees its address, and only it.
        let nic = lan.next_nic("c", std::iter::empty()).unwrap();
        assert_eq!(nic.address, Ipv4Addr::new(10, 10, 2, 3));
        lan.release("c");
        lan.release("a");
        assert_eq!(lan.members(), ["b"]);
        assert_eq!(
            lan.next_nic("c", std::iter::empty()).unwrap().address,
            Ipv4Addr::new(10, 10, 2, 1)
        );
        assert_eq!(lan.members(), ["b", "c"]);
    }
}
