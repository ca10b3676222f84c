//! Writing a test: [`VirtTest`] and the context [`Test`] it gets.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use virtest_host::Host;
use virtest_migration::{Migrate, MigrationMode, MigrationSpec};
use virtest_qemu_cmdline::binary::{self, BinaryKind};
use virtest_qemu_cmdline::machine_types;
use virtest_vm::{Login, Network, Vm, VmConfig};

use crate::hosts::TestHosts;
use crate::outcome::{TestError, TestResult};
use crate::params::{self, Params};

/// A virtualization test: `setup`, `action`, and `cleanup`, which always
/// runs (after a failure, a panic, a timeout or Ctrl-C too).
///
/// ```no_run
/// use virtest_harness::{Test, TestResult, VirtTest};
///
/// struct Boot;
///
/// impl VirtTest for Boot {
///     async fn action(&mut self, t: &mut Test) -> TestResult {
///         t.vm.power_on().await?;
///         t.vm.login_remote().await?;
///         Ok(())
///     }
///
///     async fn cleanup(&mut self, t: &mut Test) -> TestResult {
///         t.vm.remote()?.run("shutdown -h now").await?;
///         t.vm.power_off().await?;
///         Ok(())
///     }
/// }
/// ```
pub trait VirtTest: Send + 'static {
    /// Prepares the test. `t.vm` is already made from the parameters, not
    /// powered on; the default does nothing more.
    fn setup(&mut self, t: &mut Test) -> impl Future<Output = TestResult> + Send {
        let _ = t;
        async { Ok(()) }
    }

    /// The test itself.
    fn action(&mut self, t: &mut Test) -> impl Future<Output = TestResult> + Send;

    /// Cleans up; runs whatever happened before. The default ends each
    /// VM that is on: at once (QMP `quit`) when nothing of it outlives
    /// the test, gracefully (the guest shuts down) when `keep_disks`
    /// keeps its disks, so they hold a cleanly shut down guest. The
    /// runner kills any VM still on after it.
    fn cleanup(&mut self, t: &mut Test) -> impl Future<Output = TestResult> + Send {
        async move {
            for (_, vm) in t.vms_mut() {
                if vm.is_on() {
                    match vm.config().keep_disks {
                        true => vm.power_off().await?,
                        false => vm.within(Duration::ZERO).power_off().await?,
                    };
                }
            }
            Ok(())
        }
    }
}

/// A boxed phase future.
pub(crate) type Phase<'a> = Pin<Box<dyn Future<Output = TestResult> + Send + 'a>>;

/// [`VirtTest`] made object-safe, for the runner.
pub(crate) trait DynTest: Send {
    fn setup<'a>(&'a mut self, t: &'a mut Test) -> Phase<'a>;
    fn action<'a>(&'a mut self, t: &'a mut Test) -> Phase<'a>;
    fn cleanup<'a>(&'a mut self, t: &'a mut Test) -> Phase<'a>;
}

impl<T: VirtTest> DynTest for T {
    fn setup<'a>(&'a mut self, t: &'a mut Test) -> Phase<'a> {
        Box::pin(VirtTest::setup(self, t))
    }
    fn action<'a>(&'a mut self, t: &'a mut Test) -> Phase<'a> {
        Box::pin(VirtTest::action(self, t))
    }
    fn cleanup<'a>(&'a mut self, t: &'a mut Test) -> Phase<'a> {
        Box::pin(VirtTest::cleanup(self, t))
    }
}

/// Makes a new value of a test, for each run of it (a retry too).
pub(crate) type Maker = std::sync::Arc<dyn Fn() -> Box<dyn DynTest> + Send + Sync>;

/// A test the runner can list and make: its name and a constructor.
pub struct TestDef {
    name: String,
    make: Maker,
}

impl std::fmt::Debug for TestDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDef").field("name", &self.name).finish()
    }
}

impl TestDef {
    /// A test named after its type (`RebootTwice` is `reboot_twice`).
    ///
    /// ```
    /// # use virtest_harness::{Test, TestDef, TestResult, VirtTest};
    /// struct RebootTwice;
    /// impl VirtTest for RebootTwice {
    ///     async fn action(&mut self, _t: &mut Test) -> TestResult { Ok(()) }
    /// }
    /// assert_eq!(TestDef::new("RebootTwice", || RebootTwice).name(), "reboot_twice");
    /// ```
    pub fn new<T: VirtTest>(type_name: &str, make: fn() -> T) -> TestDef {
        TestDef {
            name: snake_case(type_name),
            make: std::sync::Arc::new(move || Box::new(make())),
        }
    }

    /// The test's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn maker(&self) -> Maker {
        self.make.clone()
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// What a test works with: its VM (and any it adds), its parameters, its
/// log directory.
pub struct Test {
    /// The VM, made from the parameters, not powered on; named `vm`.
    pub vm: Vm,
    /// The parameters of this run (one variant).
    pub params: Params,
    name: String,
    log_dir: PathBuf,
    warnings: Vec<String>,
    /// VMs [`Test::add_vm`] added, in order.
    added: Vec<(String, Vm)>,
    /// Networks [`Test::add_network`] made, in order.
    networks: Vec<Network>,
    /// Hosts [`Test::add_host`] added; dropped after the VMs.
    hosts: TestHosts,
}

impl Test {
    /// A context for test `name` logging to `log_dir`, its VM made from
    /// `params`.
    pub fn new(name: &str, params: Params, log_dir: &Path) -> Result<Test, TestError> {
        Ok(Test {
            vm: new_vm(&params, log_dir, None)?,
            hosts: TestHosts::new(params.value_if_set(&params::HOSTS)?.as_deref())?,
            params,
            name: name.to_string(),
            log_dir: log_dir.to_path_buf(),
            warnings: Vec::new(),
            added: Vec::new(),
            networks: Vec::new(),
        })
    }

    /// Adds a VM named `name`: made from the test's parameters with
    /// `overrides` applied, logging under `vm-NAME/` in the test's
    /// directory, not powered on. `t.vm` stays the first; the runner
    /// gathers every VM's failure bundle and ends every VM after cleanup.
    ///
    /// ```no_run
    /// # async fn f(t: &mut virtest_harness::Test) -> virtest_harness::TestResult {
    /// let server = t.add_vm("server", &[("memory", "512")])?;
    /// server.power_on().await?;
    /// # Ok(()) }
    /// ```
    pub fn add_vm(&mut self, name: &str, overrides: &[(&str, &str)]) -> Result<&mut Vm, TestError> {
        let fits = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if name.is_empty() || !name.chars().all(fits) {
            return Err(TestError::new(
                crate::status::Status::Error,
                format!("`{name}` cannot name a VM: use letters, digits, `-` and `_`"),
            ));
        }
        if name == "vm" || self.added.iter().any(|(taken, _)| taken == name) {
            return Err(TestError::new(
                crate::status::Status::Error,
                format!("the test already has a VM named `{name}`"),
            ));
        }
        let mut params = self.params.clone();
        for (key, value) in overrides {
            params.set(*key, *value);
        }
        let vm = new_vm(
            &params,
            &self.log_dir.join(format!("vm-{name}")),
            Some(name),
        )?;
        self.added.push((name.to_string(), vm));
        Ok(&mut self.added.last_mut().expect("pushed").1)
    }

    /// Puts the VMs named in `members` (`vm` is [`Test::vm`]), still off,
    /// on a new private network named `name`: an L2 segment of their own
    /// with addresses `10.10.N.1`, `.2`, ... in `members`' order, the
    /// test's `N`th network. Each VM keeps its user-mode NIC for SSH;
    /// a VM that migrates stays on the network.
    ///
    /// ```no_run
    /// # async fn f(t: &mut virtest_harness::Test) -> virtest_harness::TestResult {
    /// t.add_vm("server", &[])?;
    /// let lan = t.add_network("lan", &["server", "vm"])?;
    /// let server = t.vm_named("server").expect("added");
    /// let address = server.address(&lan).expect("on it");
    /// server.power_on().await?;
    /// t.vm.power_on().await?;
    /// t.vm.login_remote().await?.run(&format!("ping -c 1 {address}")).await?;
    /// # Ok(()) }
    /// ```
    pub fn add_network(&mut self, name: &str, members: &[&str]) -> Result<Network, TestError> {
        let refuse = |reason: String| {
            TestError::new(
                crate::status::Status::Error,
                format!("network `{name}`: {reason}"),
            )
        };
        if members.is_empty() {
            return Err(refuse("a network needs at least one VM".into()));
        }
        if self.networks.iter().any(|n| n.name() == name) {
            return Err(refuse("the test already has a network of that name".into()));
        }
        let index = u8::try_from(self.networks.len())
            .map_err(|_| refuse("a test has 256 networks at most".into()))?;
        for (i, member) in members.iter().enumerate() {
            if members[..i].contains(member) {
                return Err(refuse(format!("VM `{member}` is named twice")));
            }
            match self.vm_named(member) {
                None => {
                    return Err(refuse(format!(
                        "the test has no VM named `{member}` (add it with add_vm first)"
                    )));
                }
                Some(vm) if vm.has_started_qemu() => {
                    return Err(refuse(format!(
                        "VM `{member}` has been powered on: VMs join a network before their first power_on"
                    )));
                }
                Some(_) => {}
            }
        }
        let network = Network::new(name, index)?;
        for member in members {
            network.join(self.vm_named(member).expect("checked above"))?;
        }
        tracing::info!(
            network = name,
            subnet = network.subnet(),
            segment = %network.segment(),
            members = members.join(", "),
            "made a network"
        );
        self.networks.push(network.clone());
        Ok(network)
    }

    /// Host `name`, added at the first call (later calls give the same):
    /// a real host where the `hosts` parameter's file names it, else a
    /// simulated one on this machine, a network namespace with its own
    /// link, address, sshd and storage (this needs root; without it the
    /// test is skipped, saying so). Move a VM there with
    /// `vm.migrate_to(&host, mode)`, or start it there
    /// (`vm.set_host(host)` before `power_on`).
    ///
    /// ```no_run
    /// # async fn f(t: &mut virtest_harness::Test) -> virtest_harness::TestResult {
    /// use virtest_harness::prelude::*;
    /// let b = t.add_host("b").await?;
    /// t.vm.power_on().await?;
    /// t.vm.migrate_to(&b, MigrationMode::Tcp).await?;
    /// t.vm.login_remote().await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_host(&mut self, name: &str) -> Result<Host, TestError> {
        self.hosts.add(name, &self.log_dir).await
    }

    /// The test's own host, as the hosts [`Test::add_host`] made reach
    /// it: a VM migrates back here with `vm.migrate_to(&t.local_host(),
    /// mode)`.
    pub fn local_host(&self) -> Host {
        self.hosts.local()
    }

    /// The VM named `name`: `vm` is [`Test::vm`], others were added.
    pub fn vm_named(&mut self, name: &str) -> Option<&mut Vm> {
        if name == "vm" {
            return Some(&mut self.vm);
        }
        self.added
            .iter_mut()
            .find(|(added, _)| added == name)
            .map(|(_, vm)| vm)
    }

    /// Every VM of the test with its name, `t.vm` (`vm`) first: for
    /// holding two VMs' sessions at once.
    ///
    /// ```no_run
    /// # async fn f(t: &mut virtest_harness::Test) -> virtest_harness::TestResult {
    /// let server = t.vms().find(|(name, _)| *name == "server").expect("added").1;
    /// let (client, server) = (t.vm.remote()?, server.remote()?);
    /// # Ok(()) }
    /// ```
    pub fn vms(&self) -> impl Iterator<Item = (&str, &Vm)> {
        std::iter::once(("vm", &self.vm))
            .chain(self.added.iter().map(|(name, vm)| (name.as_str(), vm)))
    }

    /// Every VM of the test with its name, `t.vm` (`vm`) first.
    pub fn vms_mut(&mut self) -> impl Iterator<Item = (&str, &mut Vm)> {
        std::iter::once(("vm", &mut self.vm))
            .chain(self.added.iter_mut().map(|(name, vm)| (name.as_str(), vm)))
    }

    /// The test's name, with its variant.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where this test's files go (`debug.log`, the VM's logs, reports).
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Writes a line to the test's `debug.log`.
    pub fn log(&self, message: impl std::fmt::Display) {
        tracing::info!("{message}");
    }

    /// Records a warning: a test that otherwise passes ends WARN.
    pub fn warn(&mut self, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!("{message}");
        self.warnings.push(message);
    }

    pub(crate) fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// A VM made from the parameters, logging to `log_dir`, its migrations
/// set up from them too.
fn new_vm(params: &Params, log_dir: &Path, name: Option<&str>) -> Result<Vm, TestError> {
    let mut config = vm_config(params, log_dir)?;
    config.name = name.map(str::to_string);
    let migration = migration_defaults(params)?;
    if let Some(destination) = &migration.destination_qemu
        && config.pin_machine_type
    {
        pin_machine_type(&mut config, destination)?;
    }
    let mut vm = Vm::new(config);
    vm.set_migration_defaults(migration);
    Ok(vm)
}

/// Pins the VM's machine type to a versioned one its QEMU and the
/// migrations' `destination` both have, when its alias (`q35`) stands for
/// another type on each: then it can migrate there and back.
fn pin_machine_type(config: &mut VmConfig, destination: &Path) -> Result<(), TestError> {
    let arch = config.guest.arch;
    let source = binary::find_for(BinaryKind::System, arch, config.qemu.as_deref())?;
    let destination = binary::find_for(BinaryKind::Destination, arch, Some(destination))?;
    let (on_source, on_destination) = (binary::probe(&source)?, binary::probe(&destination)?);
    let machine = &mut config.guest.machine.machine_type;
    if let Some(shared) = machine_types::shared(&on_source, &on_destination, machine)? {
        tracing::info!(
            "machine type `{machine}` pinned to `{shared}`, which QEMU {} and QEMU {} both have",
            on_source.version,
            on_destination.version
        );
        *machine = shared;
    }
    Ok(())
}

/// What `vm.migrate(mode)` does besides its mode, from the parameters:
/// the timeout, the bandwidth (MiB/s), the destination's QEMU and the
/// capabilities.
pub fn migration_defaults(params: &Params) -> Result<MigrationSpec, TestError> {
    let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    let scale = params.value(&params::TIMEOUT_SCALE)?.factor();
    spec.timeout = match params.value_if_set(&params::MIGRATE_TIMEOUT)? {
        Some(timeout) => timeout,
        None => spec.timeout.mul_f64(scale),
    };
    spec.max_bandwidth = params
        .value_if_set(&params::MIGRATE_MAX_BANDWIDTH)?
        .map(|mib| mib.get() << 20);
    spec.destination_qemu = params
        .value_if_set(&params::QEMU_DST_BIN)?
        .map(|choice| choice.resolve())
        .transpose()?;
    for name in params
        .value_if_set(&params::MIGRATION_CAPS)?
        .unwrap_or_default()
    {
        spec.enable(&name);
    }
    if let Some(compression) = params.value_if_set(&params::MULTIFD_COMPRESSION)? {
        spec.enable("multifd");
        spec.set_parameter("multifd-compression", &compression)?;
    }
    if let Some(channels) = params.value_if_set(&params::MULTIFD_CHANNELS)? {
        spec.set_parameter("multifd-channels", &channels.to_string())?;
    }
    spec.tls = params.value_if_set(&params::TLS)?;
    spec.tls_hostname = params.value_if_set(&params::TLS_HOSTNAME)?;
    for (name, value) in params
        .value_if_set(&params::MIGRATION_PARAMS)?
        .unwrap_or_default()
    {
        spec.set_parameter(&name, &value)?;
    }
    Ok(spec)
}

/// A VM configuration from the parameters (see the README's table).
pub fn vm_config(params: &Params, log_dir: &Path) -> Result<VmConfig, TestError> {
    let guest = params.value(&params::GUEST)?;
    // Its warnings are said once for the job, on the terminal, by the
    // runner.
    let (description, _) =
        virtest_guest::guests::load(&guest).map_err(|source| virtest_vm::Error::Guest {
            guest: guest.as_str().into(),
            source,
        })?;
    let mut config = VmConfig::new(description);
    config.qemu = params
        .value_if_set(&params::QEMU_BIN)?
        .map(|choice| choice.resolve())
        .transpose()?;
    config.qemu_img = params.value_if_set(&params::QEMU_IMG_BIN)?;
    config.accel = params.value(&params::ACCEL)?;
    config.memory_mib = params.value_if_set(&params::MEMORY)?.map(|n| n.get());
    config.cpus = params.value_if_set(&params::CPUS)?.map(|n| n.get());
    if let Some(tpm) = params.value_if_set(&params::TPM)? {
        config.tpm = tpm;
    }
    config.user = params.value_if_set(&params::GUEST_USER)?;
    if let Some(password) = params.value_if_set(&params::GUEST_PASSWORD)? {
        config.login = Login::Password(password);
    }
    // Defaults scale with the host's speed; what the user says is kept.
    let scale = params.value(&params::TIMEOUT_SCALE)?.factor();
    config.start_timeout = config.start_timeout.mul_f64(scale);
    config.login_timeout = match params.value_if_set(&params::LOGIN_TIMEOUT)? {
        Some(timeout) => timeout,
        None => config.login_timeout.mul_f64(scale),
    };
    config.keep_disks = params.value(&params::KEEP_DISKS)?;
    config.pin_machine_type = params.value(&params::PIN_MACHINE_TYPE)?;
    config.forward_ports = params
        .value_if_set(&params::FORWARD_PORTS)?
        .unwrap_or_default();
    config.boot = params.value(&params::BOOT)?;
    config.snapshot_format = params.value(&params::SNAPSHOT_FORMAT)?;
    config.log_dir = Some(log_dir.to_path_buf());
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_snake_case() {
        assert_eq!(snake_case("Boot"), "boot");
        assert_eq!(snake_case("MigrationOverFd"), "migration_over_fd");
    }
}
