//! Where hot-plugged devices go on the guest's PCI buses: the spare
//! PCIe root ports a q35 VM starts with, and the address a device got.

use qapi::qmp::{PciDeviceInfo, PciInfo};
use virtest_qemu_cmdline::Props;

/// The spare PCIe root ports of a q35 VM.
pub(crate) const ROOT_PORTS: usize = 4;

/// The id of spare root port `n`.
pub(crate) fn root_port_id(n: usize) -> String {
    format!("hotplug{n}")
}

/// Whether `machine_type` has a PCIe root complex (`q35`, Arm's `virt`), where hot-plugged
/// devices need root ports.
pub(crate) fn is_pcie(machine_type: &str) -> bool {
    machine_type.contains("q35") || machine_type.starts_with("virt")
}

/// The `-device` arguments of the spare root ports (none on a PCI
/// machine).
pub(crate) fn root_ports(machine_type: &str) -> Vec<Props> {
    if !is_pcie(machine_type) {
        return Vec::new();
    }
    (0..ROOT_PORTS)
        .map(|n| {
            let mut props = Props::with_head("pcie-root-port");
            props
                .set("id", root_port_id(n))
                .set("chassis", (n + 1).to_string());
            props
        })
        .collect()
}

/// The guest's PCI address (`0000:BB:SS.F`) of the device with id `id`
/// in a `query-pci` reply, looking behind bridges and root ports.
pub(crate) fn guest_pci_address(buses: &[PciInfo], id: &str) -> Option<String> {
    fn search(devices: &[PciDeviceInfo], id: &str) -> Option<String> {
        devices.iter().find_map(|device| {
            if device.qdev_id == id {
                return Some(format!(
                    "0000:{:02x}:{:02x}.{}",
                    device.bus, device.slot, device.function
                ));
            }
            let behind = device.pci_bridge.as_ref()?.devices.as_deref()?;
            search(behind, id)
        })
    }
    buses.iter().find_map(|bus| search(&bus.devices, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_behind_a_root_port_has_its_secondary_bus() {
        // QEMU 7.2's `query-pci` for a q35 VM with a virtio-rng on a root
        // port, once SeaBIOS numbered the buses (trimmed to two devices).
        let reply: Vec<PciInfo> = serde_json::from_str(
            r#"[{"bus": 0, "devices": [{"irq_pin": 0, "bus": 0, "qdev_id": "", "slot": 0,
            "class_info": {"class": 1536, "desc": "Host bridge"}, "id": {"device": 10688,
            "subsystem-vendor": 6900, "vendor": 32902, "subsystem": 4352}, "function": 0,
            "regions": []}, {"irq_pin": 1, "bus": 0, "pci_bridge": {"bus": {
            "prefetchable_range": {"limit": 4273995775, "base": 4271898624}, "memory_range":
            {"limit": 4269801471, "base": 4267704320}, "secondary": 1, "io_range": {"limit":
            49151, "base": 49152}, "number": 0, "subordinate": 1}, "devices": [{"irq_pin": 1,
            "bus": 1, "qdev_id": "rng1", "irq": 10, "slot": 0, "class_info": {"class": 255},
            "id": {"device": 4164, "subsystem-vendor": 6900, "vendor": 6900, "subsystem":
            4352}, "function": 0, "regions": [{"prefetch": false, "mem_type_64": false, "bar":
            1, "size": 4096, "address": 4267704320, "type": "memory"}, {"prefetch": true,
            "mem_type_64": true, "bar": 4, "size": 16384, "address": 4271898624, "type":
            "memory"}]}]}, "qdev_id": "hotplug0", "irq": 10, "slot": 5, "class_info": {"class":
            1540, "desc": "PCI bridge"}, "id": {"device": 12, "vendor": 6966}, "function": 0,
            "regions": [{"prefetch": false, "mem_type_64": false, "bar": 0, "size": 4096,
            "address": 4269801472, "type": "memory"}]}]}]"#,
        )
        .unwrap();
        assert_eq!(
            guest_pci_address(&reply, "rng1").as_deref(),
            Some("0000:01:00.0")
        );
        assert_eq!(
            guest_pci_address(&reply, "hotplug0").as_deref(),
            Some("0000:00:05.0")
        );
        assert_eq!(guest_pci_address(&reply, "nosuch"), None);
    }
}
