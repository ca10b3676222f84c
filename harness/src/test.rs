//! Writing a test: [`VirtTest`] and the context [`Test`] it gets.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use virtest_vm::{Login, Vm, VmConfig};

use crate::outcome::{TestError, TestResult};
use crate::params::{ParamError, Params};

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

    /// Cleans up; runs whatever happened before. The default ends the
    /// VM if it is on: at once (QMP `quit`) when nothing of it outlives
    /// the test, gracefully (the guest shuts down) when `keep_disks`
    /// keeps its disks, so they hold a cleanly shut down guest. The
    /// runner kills any VM still on after it.
    fn cleanup(&mut self, t: &mut Test) -> impl Future<Output = TestResult> + Send {
        async move {
            if t.vm.is_on() {
                match t.vm.config().keep_disks {
                    true => t.vm.power_off().await?,
                    false => t.vm.power_off_within(Duration::ZERO).await?,
                };
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

/// What a test works with: its VM, its parameters, its log directory.
pub struct Test {
    /// The VM, made from the parameters, not powered on.
    pub vm: Vm,
    /// The parameters of this run (one variant).
    pub params: Params,
    name: String,
    log_dir: PathBuf,
    warnings: Vec<String>,
}

impl Test {
    /// A context for test `name` logging to `log_dir`, its VM made from
    /// `params`.
    pub fn new(name: &str, params: Params, log_dir: &Path) -> Result<Test, TestError> {
        let config = vm_config(&params, log_dir)?;
        Ok(Test {
            vm: Vm::new(config),
            params,
            name: name.to_string(),
            log_dir: log_dir.to_path_buf(),
            warnings: Vec::new(),
        })
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

/// A VM configuration from the parameters (see the README's table).
pub fn vm_config(params: &Params, log_dir: &Path) -> Result<VmConfig, TestError> {
    let guest = params
        .get_str("guest")
        .unwrap_or(virtest_guest::guests::DEFAULT);
    let (description, warnings) =
        virtest_guest::guests::load(guest).map_err(|source| virtest_vm::Error::Guest {
            guest: guest.into(),
            source,
        })?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let mut config = VmConfig::new(description);
    config.qemu = params.get("qemu_bin")?;
    config.destination_qemu = params.get("qemu_dst_bin")?;
    config.qemu_img = params.get("qemu_img_bin")?;
    if let Some(accel) = params.get_str("accel") {
        config.accel = accel.parse()?;
    }
    config.memory_mib = params.get("memory")?;
    config.cpus = params.get("cpus")?;
    config.user = params.get("guest_user")?;
    if let Some(password) = params.get_str("guest_password") {
        config.login = Login::Password(password.to_string());
    }
    config.login_timeout = params.seconds_or("login_timeout", config.login_timeout)?;
    config.migrate_timeout = params.seconds_or("migrate_timeout", Duration::from_secs(60))?;
    config.migrate_max_bandwidth = params
        .get::<u64>("migrate_max_bandwidth")?
        .map(|mib| mib << 20);
    config.keep_disks = params.get_or("keep_disks", false)?;
    if let Some(ports) = params.get_str("forward_ports") {
        config.forward_ports =
            crate::params::parse_ports(ports).ok_or_else(|| ParamError::Type {
                key: "forward_ports".into(),
                value: ports.into(),
                expected: "TCP ports 1-65535, comma-separated (80,443)".into(),
            })?;
    }
    let boot = params.get_str("boot").unwrap_or("snapshot");
    config.boot = virtest_vm::BootMode::parse(boot).ok_or_else(|| ParamError::Type {
        key: "boot".into(),
        value: boot.into(),
        expected: format!("one of {}", virtest_vm::BootMode::NAMES.join(", ")),
    })?;
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
