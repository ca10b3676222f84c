//! Starting further QEMU processes of a VM: each on a host, with fresh
//! endpoints; the destination of a migration from the running one's
//! command line, on a machine type the destination QEMU has.

use std::path::Path;
use std::sync::Arc;

use virtest_host::Host;
use virtest_qemu_cmdline::{PropsOption, QemuCmdline, binary, machine_types};

use crate::endpoints::Endpoints;
use crate::error::{Error, Result};
use crate::instance::{Files, Instance};
use crate::placement::Placement;
use crate::vm::Vm;

impl Vm {
    /// Starts another QEMU process of this VM from the command line
    /// `build` makes for fresh endpoints, sharing the VM's console and
    /// logs. The command line names the files of placement `from`; the
    /// QEMU gets those of `host` (see [`Vm::placement_on`]).
    pub(crate) async fn start_instance_with(
        &mut self,
        host: &Host,
        build: &(dyn Fn(&Endpoints) -> QemuCmdline + Sync),
        from: Arc<Placement>,
        incoming: bool,
    ) -> Result<Instance> {
        let console = self.console()?.clone();
        let qmp_log = self.qmp_log()?;
        self.generation += 1;
        let (placement, fill_disks) = self.placement_on(host, incoming).await?;
        let build = |endpoints: &Endpoints| {
            let mut cmdline = build(endpoints);
            placement.rewrite(&mut cmdline, &from);
            cmdline
        };
        let host_sockets = match host.runtime_dir() {
            Some(dir) => {
                let dir = dir.join(&self.id);
                let shown = dir.to_string_lossy();
                host.check(&["mkdir", "-p", "-m", "700", &shown])
                    .await
                    .map_err(Error::Host)?;
                dir
            }
            None => self.runtime_dir.clone(),
        };
        let tpm = self.tpm_files(host, &host_sockets, incoming).await?;
        // Each host's QEMU writes a log of its own.
        let qemu_log = match host.is_local() {
            true => self.log_dir.join("qemu.log"),
            false => self.log_dir.join(format!("qemu-{}.log", host.name())),
        };
        let files = Files {
            host,
            sockets: &self.runtime_dir,
            host_sockets: &host_sockets,
            qemu_log: &qemu_log,
            qmp_log: &qmp_log,
            console: &console,
            placement: &placement,
            fill_disks,
            tpm: tpm.as_ref(),
        };
        Instance::start(&files, self.generation, self.config.start_timeout, &build).await
    }

    /// Where a QEMU of this VM on `host` finds the VM's files: where the
    /// VM's disks are, when `host` sees them; else placed afresh (copied
    /// to the host's own storage, new overlays), and then, for an
    /// `incoming` QEMU, `true`: its disks are for the migration to fill.
    /// A VM whose disks are on another host's storage powers on there.
    async fn placement_on(&self, host: &Host, incoming: bool) -> Result<(Arc<Placement>, bool)> {
        let disks = self.disks.as_ref().expect("made at the first power_on");
        match &self.disks_at {
            Some(placement) if placement.serves(host) => return Ok((placement.clone(), false)),
            None if host.sees_local_files() => {
                return Ok((Arc::new(Placement::here(disks)), false));
            }
            Some(placement) if !incoming && !disks.overlays().is_empty() => {
                let there = match placement.host() {
                    Some(own) => format!("host `{}`'s storage", own.name()),
                    None => "this machine".into(),
                };
                return Err(Error::State {
                    what: format!(
                        "the VM's disks are on {there}, where it last ran, and host `{}` has \
                         storage of its own: power the VM on where its disks are (`vm.set_host`), \
                         or migrate it to `{}` before it powers off",
                        host.name(),
                        host.name()
                    ),
                });
            }
            _ => {}
        }
        if self.hotplugged.has_disk() {
            return Err(Error::State {
                what: format!(
                    "the VM has a hot-plugged disk, whose file is not copied to host `{}`'s own \
                     storage yet: unplug it first, or give the host shared storage",
                    host.name()
                ),
            });
        }
        let mut inputs = Vec::new();
        if let Some(kernel) = &self.config.guest.boot.kernel {
            inputs.push(kernel.kernel.clone());
            inputs.extend(kernel.initrd.clone());
        }
        inputs.extend(disks.seed().map(Path::to_path_buf));
        let placement = Placement::fresh(host, &self.id, self.generation, disks, &inputs).await?;
        let fill = incoming && !placement.overlays().is_empty();
        Ok((Arc::new(placement), fill))
    }

    /// Starts a second QEMU process of this VM, waiting for its state
    /// (`-incoming INCOMING`, `defer` to choose the transport later): the
    /// running one's command line, with a fresh set of host endpoints
    /// (sockets, forwarded ports QEMU chooses) and, if given, another
    /// QEMU binary. It shares the VM's console and logs; hand it over
    /// with [`Vm::hand_over`] once it runs the guest, or drop it.
    ///
    /// On another QEMU, a machine type given as an alias (`q35`) becomes
    /// the versioned type the source runs (`pc-q35-7.2`), which the
    /// destination must have: QEMU takes a VM's state only on its type
    /// ([`crate::VmConfig::pin_machine_type`] turns this off).
    pub async fn start_incoming(
        &mut self,
        incoming: &str,
        binary: Option<&Path>,
    ) -> Result<Instance> {
        let host = self.host().clone();
        self.start_incoming_on(&host, incoming, binary).await
    }

    /// [`Vm::start_incoming`] on `host`, which may be another than the
    /// running QEMU's: its QEMU binary is `binary`, else the host's own
    /// ([`Host::qemu`]), else the running one's.
    pub async fn start_incoming_on(
        &mut self,
        host: &Host,
        incoming: &str,
        binary: Option<&Path>,
    ) -> Result<Instance> {
        let source = self.instance()?;
        let mut cmdline = source.cmdline().clone();
        let from = source.endpoints().clone();
        // The same QEMU binary needs no machine type of its own.
        let binary = binary
            .or(host.qemu())
            .filter(|&binary| binary != cmdline.binary);
        if let Some(binary) = binary {
            if !self.config.pin_machine_type {
                tracing::info!("the destination's machine type is left as written");
            } else if let Some(machine) = running_machine_on(&cmdline, binary)? {
                let mut props = cmdline
                    .props(PropsOption::Machine)
                    .cloned()
                    .unwrap_or_default();
                props.set_head(machine);
                cmdline.set_props(PropsOption::Machine, props);
            }
            cmdline.binary = binary.to_path_buf();
        }
        let placement = source.placement().clone();
        let build = move |to: &Endpoints| cmdline.clone_for_incoming(incoming, from.remap_to(to));
        self.start_instance_with(host, &build, placement, true)
            .await
    }
}

/// The machine type a destination QEMU `binary` must be given for the
/// VM `source` runs: the versioned type the source's alias stands for,
/// when it stands for another on the destination; `None` when the same
/// name does. An error when the destination lacks the type.
fn running_machine_on(source: &QemuCmdline, binary: &Path) -> Result<Option<String>> {
    let Some(asked) = source
        .props(PropsOption::Machine)
        .and_then(|p| p.head())
        .map(str::to_string)
    else {
        return Ok(None);
    };
    let on_source = binary::probe(&source.binary).map_err(Error::Qemu)?;
    let on_destination = binary::probe(binary).map_err(Error::Qemu)?;
    let running = on_source.resolve_machine(&asked).unwrap_or(&asked);
    if on_destination.resolve_machine(&asked) == Some(running) {
        return Ok(None);
    }
    if on_destination.machines.iter().any(|m| m == running) {
        return Ok(Some(running.to_string()));
    }
    let hint = match machine_types::shared(&on_source, &on_destination, &asked) {
        Ok(Some(both)) => format!(
            "; start the VM on `{both}`, which both have (the guest's machine type, or \
             virtest's qemu_dst_bin parameter, which pins it)"
        ),
        _ => String::new(),
    };
    Err(Error::Qemu(virtest_qemu_cmdline::Error::NoSharedMachine(
        Box::new(machine_types::NoSharedMachine {
            hint,
            wanted: asked.clone(),
            source_qemu: source.binary.clone(),
            source_type: format!("there `{running}`, which the VM runs"),
            destination_qemu: binary.to_path_buf(),
            destination_type: match on_destination.resolve_machine(&asked) {
                Some(other) => format!("there `{other}`, and no `{running}`"),
                None => "not there".into(),
            },
        }),
    )))
}
