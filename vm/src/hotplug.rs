//! Hot-plugging into a running VM through [`Vm::hotplug`]: any PCI
//! device ([`Hotplug::device`]), a new disk ([`Hotplug::disk`]) or a NIC
//! on a private network ([`Hotplug::nic`]), and taking one out
//! ([`Hotplug::unplug`]). Each waits
//! for what proves it done: the guest sees the device; on unplug, QEMU's
//! `DEVICE_DELETED` (the guest let it go).
//!
//! A hot-plugged device is also written into the running QEMU's command
//! line, so a migration's destination starts with it (on the same PCIe
//! root port), and the migration carries its state. It lasts until the
//! VM powers off: the next `power_on` starts without it, as hardware
//! would. On a PCIe machine (q35) each VM has four spare root
//! ports for this; on a PCI one (`pc`), devices go on the root bus.

use std::path::PathBuf;

use crate::network::{Network, NetworkNic};

mod pci;

pub(crate) use pci::{ROOT_PORTS, guest_pci_address, is_pcie, root_port_id, root_ports};

/// A device hot-plugged into the running QEMU.
#[derive(Debug, Clone)]
pub(crate) struct Hotplugged {
    /// The device's id.
    pub(crate) id: String,
    /// The root port it is on (`None` on a PCI machine's root bus).
    pub(crate) port: Option<usize>,
    pub(crate) backend: Backend,
}

/// What a hot-plugged device holds beyond its QEMU device.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// Nothing but the device.
    None,
    /// A block node of the same name over a qcow2 file made for it.
    Disk { file: PathBuf },
    /// A NIC on a private network, which it leaves when unplugged.
    Nic(NetworkNic, Network),
}

impl Hotplugged {
    /// Takes back what the device held beyond QEMU: a NIC's address on
    /// its network (for a VM named `vm_name`).
    pub(crate) fn release(&self, vm_name: &str) {
        if let Backend::Nic(_, network) = &self.backend {
            network.release(vm_name);
        }
    }

    /// The NIC, for a hot-plugged one.
    pub(crate) fn nic(&self) -> Option<&NetworkNic> {
        match &self.backend {
            Backend::Nic(nic, _) => Some(nic),
            Backend::Disk { .. } | Backend::None => None,
        }
    }
}

/// The devices hot-plugged into a VM's running QEMU, until it powers
/// off: this module's own part of a [`Vm`].
#[derive(Debug, Default)]
pub(crate) struct Plugged(pub(crate) Vec<Hotplugged>);

impl Plugged {
    /// The hot-plugged NICs.
    /// Whether a hot-plugged disk is among them.
    pub(crate) fn has_disk(&self) -> bool {
        self.0
            .iter()
            .any(|plugged| matches!(plugged.backend, Backend::Disk { .. }))
    }

    pub(crate) fn nics(&self) -> impl Iterator<Item = &NetworkNic> {
        self.0.iter().filter_map(Hotplugged::nic)
    }

    /// Forgets every device (QEMU ended), giving back what each held
    /// beyond QEMU (a NIC's address on its network, for a VM named
    /// `vm_name`).
    pub(crate) fn release_all(&mut self, vm_name: &str) {
        for device in self.0.drain(..) {
            device.release(vm_name);
        }
    }
}
