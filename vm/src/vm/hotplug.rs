//! [`Vm::hotplug`]: the [`Hotplug`] handle, and what each hot-plug does
//! to the running QEMU and waits for in the guest. What a VM holds
//! plugged is `crate::hotplug`'s.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use qapi::qmp::{blockdev_del, device_del, netdev_del, query_pci};
use serde_json::{Value, json};
use virtest_qemu_cmdline::binary::{self, BinaryKind};
use virtest_qemu_cmdline::{Arg, Props, PropsOption};
use virtest_remote::Session;

use super::Vm;
use crate::error::{Error, Result};
use crate::hotplug::{Backend, Hotplugged, ROOT_PORTS, guest_pci_address, is_pcie, root_port_id};
use crate::network::{self, Network, NetworkNic};

/// How long the guest may take to see a device, or to let one go.
const GUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Hot-plug on one VM, from [`Vm::hotplug`]: devices added to and taken
/// out of its running QEMU.
///
/// ```no_run
/// # async fn f(vm: &mut virtest_vm::Vm, lan: &virtest_vm::Network) -> virtest_vm::Result<()> {
/// let disk = vm.hotplug().disk("data", 64).await?;
/// let address = vm.hotplug().nic(lan).await?;
/// assert_eq!(vm.hotplug().devices(), ["data", "lan"]);
/// vm.hotplug().unplug("data").await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Hotplug<'vm> {
    vm: &'vm mut Vm,
}

impl Hotplug<'_> {
    /// Hot-plugs a PCI device: QEMU's `driver` with id `id` and
    /// `properties`. Returns its PCI address in the guest
    /// (`0000:01:00.0`) once the guest has it in `/sys/bus/pci/devices`
    /// (logging in first if the test has no session).
    pub async fn device(
        &mut self,
        driver: &str,
        id: &str,
        properties: &[(&str, &str)],
    ) -> Result<String> {
        self.vm.hotplug_device(driver, id, properties).await
    }

    /// Hot-plugs a new, empty disk of `size_mib` MiB named `id` on a
    /// virtio-blk device whose serial number is `id`; returns the
    /// guest's device (`/dev/vdb`) once the guest sees it.
    pub async fn disk(&mut self, id: &str, size_mib: u64) -> Result<String> {
        self.vm.hotplug_disk(id, size_mib).await
    }

    /// Puts the running VM on `network` through a new NIC named after
    /// the network; returns the address it gave the guest.
    pub async fn nic(&mut self, network: &Network) -> Result<Ipv4Addr> {
        self.vm.hotplug_nic(network).await
    }

    /// Takes out the hot-plugged device `id` (a disk's id, a NIC's
    /// network name), once the guest let it go.
    pub async fn unplug(&mut self, id: &str) -> Result<()> {
        self.vm.unplug(id).await
    }

    /// The ids of the devices hot-plugged now, in the order they came.
    pub fn devices(&self) -> Vec<&str> {
        self.vm.hotplugged.0.iter().map(|h| h.id.as_str()).collect()
    }
}

impl Vm {
    /// Hot-plug on this VM: see [`Hotplug`].
    pub fn hotplug(&mut self) -> Hotplug<'_> {
        Hotplug { vm: self }
    }

    /// Hot-plugs a PCI device: QEMU's `driver` with id `id` and
    /// `properties`. Returns its PCI address in the guest
    /// (`0000:01:00.0`) once the guest has it in `/sys/bus/pci/devices`
    /// (logging in first if the test has no session).
    ///
    /// ```no_run
    /// # async fn f(vm: &mut virtest_vm::Vm) -> virtest_vm::Result<()> {
    /// let address = vm.hotplug().device("virtio-rng-pci", "rng1", &[]).await?;
    /// vm.hotplug().unplug("rng1").await?;
    /// # Ok(()) }
    /// ```
    async fn hotplug_device(
        &mut self,
        driver: &str,
        id: &str,
        properties: &[(&str, &str)],
    ) -> Result<String> {
        let port = self.hotplug_slot(id)?;
        let mut device = Props::with_head(driver);
        for (key, value) in properties {
            device.set(key, *value);
        }
        device.set("id", id);
        self.device_add(id, port, &mut device).await?;
        self.record_hotplug(&[Arg::Props(PropsOption::Device, device)])?;
        self.hotplugged.0.push(Hotplugged {
            id: id.to_string(),
            port,
            backend: Backend::None,
        });
        let pci = self.qmp_hotplug(id, query_pci {}).await?;
        let address = guest_pci_address(&pci, id).ok_or_else(|| Error::Hotplug {
            id: id.to_string(),
            reason: "QEMU added it but `query-pci` does not list it: is it a PCI device?".into(),
        })?;
        self.wait_in_guest(id, &format!("[ -e /sys/bus/pci/devices/{address} ]"))
            .await?;
        tracing::info!(parent: self.span(), id, driver, address, "hot-plugged a device");
        Ok(address)
    }

    /// Hot-plugs a new, empty disk of `size_mib` MiB named `id`: a qcow2
    /// file made for it beside the VM's sockets, on a virtio-blk device
    /// whose serial number is `id`. Returns the guest's device
    /// (`/dev/vdb`) once the guest sees it (logging in first if the test
    /// has no session).
    ///
    /// ```no_run
    /// # async fn f(vm: &mut virtest_vm::Vm) -> virtest_vm::Result<()> {
    /// let device = vm.hotplug().disk("data", 64).await?;
    /// vm.remote()?.run(&format!("mkfs.ext4 -q {device}")).await?;
    /// vm.hotplug().unplug("data").await?;
    /// # Ok(()) }
    /// ```
    async fn hotplug_disk(&mut self, id: &str, size_mib: u64) -> Result<String> {
        if !self.host().sees_local_files() {
            return Err(Error::State {
                what: format!(
                    "a disk is not hot-plugged on host `{}` yet: its file is made here, and the \
                     host has storage of its own",
                    self.host().name()
                ),
            });
        }
        let port = self.hotplug_slot(id)?;
        let file = self.runtime_dir.join(format!("hotplug-{id}.qcow2"));
        create_qcow2(self, &file, size_mib).await?;
        let file_name = file.to_string_lossy().into_owned();
        let mut blockdev = Props::new();
        blockdev
            .set("driver", "qcow2")
            .set("node-name", id)
            .set("file.driver", "file")
            .set("file.filename", &file_name);
        let added = self
            .qmp_hotplug_json(
                id,
                "blockdev-add",
                json!({"driver": "qcow2", "node-name": id,
                       "file": {"driver": "file", "filename": file_name}}),
            )
            .await;
        if let Err(e) = added {
            let _ = std::fs::remove_file(&file);
            return Err(e);
        }
        let mut device = Props::with_head("virtio-blk-pci");
        device.set("id", id).set("drive", id).set("serial", id);
        if let Err(e) = self.device_add(id, port, &mut device).await {
            let _ = self
                .qmp_hotplug(
                    id,
                    blockdev_del {
                        node_name: id.into(),
                    },
                )
                .await;
            let _ = std::fs::remove_file(&file);
            return Err(e);
        }
        self.record_hotplug(&[
            Arg::Props(PropsOption::Blockdev, blockdev),
            Arg::Props(PropsOption::Device, device),
        ])?;
        self.hotplugged.0.push(Hotplugged {
            id: id.to_string(),
            port,
            backend: Backend::Disk { file },
        });
        // A glob that matched nothing stays as written: unguarded, a disk
        // appearing between the loop's glob and `cat`'s made `cat` read
        // every serial, and `echo` print all of /dev (seen in CI).
        let find = format!(
            "for s in /sys/block/*/serial; do [ -f \"$s\" ] || continue; \
             [ \"$(cat \"$s\")\" = {id} ] && d=\"${{s%/serial}}\" && echo \"/dev/${{d##*/}}\" && exit 0; \
             done; exit 1"
        );
        let found = self.wait_in_guest(id, &find).await?;
        tracing::info!(parent: self.span(), id, device = found, size_mib, "hot-plugged a disk");
        Ok(found)
    }

    /// Puts the running VM on `network`: hot-plugs a NIC on its segment
    /// (the device is named after the network, for [`Hotplug::unplug`]) and
    /// gives it the network's next address once the guest sees it, which
    /// this returns; later logins set it again, as for a NIC the VM
    /// started with.
    async fn hotplug_nic(&mut self, network: &Network) -> Result<Ipv4Addr> {
        let id = network.name().to_string();
        let port = self.hotplug_slot(&id)?;
        let nic = network.next_nic(self.name(), self.nics())?;
        let plugged = self.plug_nic(&id, port, &nic).await;
        if let Err(e) = plugged {
            network.release(self.name());
            return Err(e);
        }
        let address = nic.address;
        let script = network::address_script(std::slice::from_ref(&nic));
        self.hotplugged.0.push(Hotplugged {
            id: id.clone(),
            port,
            backend: Backend::Nic(nic, network.clone()),
        });
        self.wait_in_guest(&id, &script).await?;
        tracing::info!(parent: self.span(), network = id, %address, "hot-plugged a NIC");
        Ok(address)
    }

    /// The netdev and device of `nic`, added and recorded.
    async fn plug_nic(&mut self, id: &str, port: Option<usize>, nic: &NetworkNic) -> Result<()> {
        let mut netdev = Props::with_head("socket");
        netdev
            .set("id", nic.netdev_id())
            .set("mcast", nic.segment.to_string())
            .set("localaddr", "127.0.0.1");
        self.qmp_hotplug_json(
            id,
            "netdev_add",
            json!({"type": "socket", "id": nic.netdev_id(),
                   "mcast": nic.segment.to_string(), "localaddr": "127.0.0.1"}),
        )
        .await?;
        let mut device = Props::with_head(self.config().guest.machine.net_device.clone());
        device
            .set("id", id)
            .set("netdev", nic.netdev_id())
            .set("mac", &nic.mac);
        if let Err(e) = self.device_add(id, port, &mut device).await {
            let _ = self
                .qmp_hotplug(
                    id,
                    netdev_del {
                        id: nic.netdev_id(),
                    },
                )
                .await;
            return Err(e);
        }
        self.record_hotplug(&[
            Arg::Props(PropsOption::Netdev, netdev),
            Arg::Props(PropsOption::Device, device),
        ])
    }

    /// Takes out the hot-plugged device `id` (a disk's id, a NIC's
    /// network name): asks QEMU to (`device_del`), waits until the guest
    /// let it go (`DEVICE_DELETED`), then removes its block node or
    /// netdev, and its disk file.
    async fn unplug(&mut self, id: &str) -> Result<()> {
        let Some(index) = self.hotplugged.0.iter().position(|h| h.id == id) else {
            let known: Vec<&str> = self.hotplugged.0.iter().map(|h| h.id.as_str()).collect();
            return Err(Error::Hotplug {
                id: id.to_string(),
                reason: format!(
                    "the VM has no hot-plugged device of that name (it has: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        };
        let qmp = self.qmp()?.clone();
        let since = qmp.event_cursor();
        self.qmp_hotplug(id, device_del { id: id.into() }).await?;
        qmp.wait_event(
            since,
            "DEVICE_DELETED",
            &json!({"device": id}),
            GUEST_TIMEOUT,
        )
        .await
        .map_err(|_| Error::Hotplug {
            id: id.to_string(),
            reason: format!(
                "the guest did not let the device go within {GUEST_TIMEOUT:?} (no \
                     DEVICE_DELETED): does it handle PCI hot-unplug?"
            ),
        })?;
        let unplugged = self.hotplugged.0.remove(index);
        let instance = self.instance_mut()?;
        instance.cmdline_mut().remove_props(PropsOption::Device, id);
        match &unplugged.backend {
            Backend::Disk { file } => {
                instance
                    .cmdline_mut()
                    .remove_props(PropsOption::Blockdev, id);
                self.qmp_hotplug(
                    id,
                    blockdev_del {
                        node_name: id.into(),
                    },
                )
                .await?;
                let _ = std::fs::remove_file(file);
            }
            Backend::None => {}
            Backend::Nic(nic, _) => {
                instance
                    .cmdline_mut()
                    .remove_props(PropsOption::Netdev, &nic.netdev_id());
                unplugged.release(self.name());
                self.qmp_hotplug(
                    id,
                    netdev_del {
                        id: nic.netdev_id(),
                    },
                )
                .await?;
            }
        }
        tracing::info!(parent: self.span(), id, "unplugged");
        Ok(())
    }

    /// Checks `id` and finds a free root port for it.
    fn hotplug_slot(&self, id: &str) -> Result<Option<usize>> {
        let refuse = |reason: String| Error::Hotplug {
            id: id.to_string(),
            reason,
        };
        let mut chars = id.chars();
        let fits = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !fits {
            return Err(refuse(
                "an id is a letter, then letters, digits, `-` and `_`".into(),
            ));
        }
        if !self.is_on() {
            return Err(self.off_error("hot-plug"));
        }
        if self.hotplugged.0.iter().any(|h| h.id == id) {
            return Err(refuse("a hot-plugged device has that id already".into()));
        }
        if !is_pcie(&self.config().guest.machine.machine_type) {
            return Ok(None);
        }
        (0..ROOT_PORTS)
            .find(|n| !self.hotplugged.0.iter().any(|h| h.port == Some(*n)))
            .map(Some)
            .ok_or_else(|| {
                refuse(format!(
                    "all {ROOT_PORTS} hot-plug ports are taken: unplug a device first"
                ))
            })
    }

    /// `device_add` of `device` on root port `port`.
    ///
    /// Through HMP's `device_add`, which parses properties as the command
    /// line does: QMP's wants each in its JSON type (a number for
    /// `num-queues=4`), which a string of text does not tell.
    async fn device_add(&self, id: &str, port: Option<usize>, device: &mut Props) -> Result<()> {
        if let Some(port) = port {
            device.set("bus", root_port_id(port));
        }
        let said = self
            .qmp()?
            .hmp(&format!("device_add {device}"))
            .await
            .map_err(|e| Error::Hotplug {
                id: id.to_string(),
                reason: format!("QEMU refused `device_add`: {e}"),
            })?;
        match said.trim() {
            "" => Ok(()),
            error => Err(Error::Hotplug {
                id: id.to_string(),
                reason: format!("QEMU refused `device_add`: {error}"),
            }),
        }
    }

    /// A QMP command of a hot-plug, its error naming the device.
    async fn qmp_hotplug<C: qapi::Command>(&self, id: &str, command: C) -> Result<C::Ok> {
        self.qmp()?
            .execute(command)
            .await
            .map_err(|e| refused(id, C::NAME, e))
    }

    /// [`Vm::qmp_hotplug`] with JSON arguments, for `blockdev-add` and
    /// `netdev_add`: `qapi`'s types for their unions have no defaults, so
    /// typed they take dozens of `None` fields for a few lines of JSON.
    async fn qmp_hotplug_json(&self, id: &str, command: &str, args: Value) -> Result<Value> {
        self.qmp()?
            .execute_raw(command, args)
            .await
            .map_err(|e| refused(id, command, e))
    }

    /// Writes `args` into the running QEMU's command line.
    fn record_hotplug(&mut self, args: &[Arg]) -> Result<()> {
        let cmdline = self.instance_mut()?.cmdline_mut();
        for arg in args {
            cmdline.push(arg.clone());
        }
        Ok(())
    }

    /// Runs `command` in the guest until it succeeds (logging in first
    /// if needed); its output.
    async fn wait_in_guest(&mut self, id: &str, command: &str) -> Result<String> {
        if self.remote().is_err() {
            self.login_remote().await?;
        }
        let started = Instant::now();
        self.remote()?
            .wait_until_succeeds(command, GUEST_TIMEOUT)
            .await
            .map(|done| done.stdout.trim().to_string())
            .map_err(|e| Error::Hotplug {
                id: id.to_string(),
                reason: format!(
                    "QEMU added the device but the guest did not show it within {:?}: {e}",
                    started.elapsed()
                ),
            })
    }
}

/// A hot-plug's QMP error, naming the device and the command.
fn refused(id: &str, command: &str, error: virtest_qmp::Error) -> Error {
    Error::Hotplug {
        id: id.to_string(),
        reason: format!("QEMU refused `{command}`: {error}"),
    }
}

/// `qemu-img create -f qcow2 FILE SIZE`.
async fn create_qcow2(vm: &Vm, file: &std::path::Path, size_mib: u64) -> Result<()> {
    let qemu_img =
        binary::find(BinaryKind::Img, vm.config().qemu_img.as_deref()).map_err(Error::Qemu)?;
    let size = format!("{size_mib}M");
    let args = [file.as_os_str(), size.as_ref()];
    match crate::disks::qemu_img_create(&qemu_img, &args).await? {
        Ok(()) => Ok(()),
        Err(said) => Err(Error::Disk {
            path: file.to_path_buf(),
            reason: format!("qemu-img could not make it: {said}"),
        }),
    }
}
