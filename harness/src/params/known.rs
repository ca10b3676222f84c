//! The parameters the framework knows, each declared once: its name, the
//! type of its value, its default and what it means. The runner reads
//! them through these declarations ([`Params::value`]), and `virtest list
//! --parameters`, the README's table and the checks of a job's values are
//! made from [`KNOWN`].
//!
//! A test's own parameters need no declaration: `t.params.get_or("rounds",
//! 3)` reads any key.

use std::marker::PhantomData;
use std::num::{NonZeroU32, NonZeroU64};
use std::path::PathBuf;
use std::time::Duration;

use virtest_migration::{Feature, MigrationMode, Tls};
use virtest_qemu_cmdline::accel::Accel;
use virtest_vm::{BootMode, StateFormat};

use crate::host_speed::TimeoutScale;
use crate::qemus::QemuChoice;

use super::value::ParamValue;
use super::{ParamError, Params, shown};

/// A parameter that has a default: [`Params::value`] reads it.
#[derive(Debug)]
pub struct WithDefault;

/// A parameter that may have no value: [`Params::value_if_set`] reads it.
#[derive(Debug)]
pub struct NoDefault;

/// A parameter the framework knows, declared once: `T` is its value's
/// type, `D` whether it has a default.
///
/// ```
/// use std::time::Duration;
/// use virtest_harness::Params;
/// use virtest_harness::params::{MEMORY, TIMEOUT};
/// let mut params = Params::defaults();
/// assert_eq!(params.value(&TIMEOUT).unwrap(), Duration::from_secs(600));
/// params.set("timeout", "1.5");
/// assert_eq!(params.value(&TIMEOUT).unwrap(), Duration::from_millis(1500));
/// assert_eq!(params.value_if_set(&MEMORY).unwrap(), None);
/// ```
#[derive(Debug)]
pub struct Param<T, D = WithDefault> {
    /// Its name (`migrate_timeout`).
    pub name: &'static str,
    /// Its default as text (`""` for a [`NoDefault`] parameter).
    pub default: &'static str,
    /// What happens when a [`NoDefault`] parameter has no value (`the
    /// guest's`).
    pub unset: &'static str,
    /// What it does.
    pub help: &'static str,
    value: PhantomData<fn() -> (T, D)>,
}

impl<T: ParamValue> Param<T, WithDefault> {
    /// A parameter with a default.
    pub const fn new(name: &'static str, default: &'static str, help: &'static str) -> Self {
        Param {
            name,
            default,
            unset: "",
            help,
            value: PhantomData,
        }
    }
}

impl<T: ParamValue> Param<T, NoDefault> {
    /// A parameter without a default: `unset` says what happens then.
    pub const fn optional(name: &'static str, unset: &'static str, help: &'static str) -> Self {
        Param {
            name,
            default: "",
            unset,
            help,
            value: PhantomData,
        }
    }
}

impl<T: ParamValue, D> Param<T, D> {
    /// `text` as this parameter's value; an error names the key and type.
    fn parse(&self, text: &str) -> Result<T, ParamError> {
        T::parse(text).ok_or_else(|| ParamError::Type {
            key: self.name.into(),
            value: shown(self.name, text),
            expected: T::expected(),
        })
    }
}

impl Params {
    /// A known parameter's value: the one set, else its default.
    pub fn value<T: ParamValue>(&self, param: &Param<T, WithDefault>) -> Result<T, ParamError> {
        param.parse(self.get_str(param.name).unwrap_or(param.default))
    }

    /// A known parameter's value, if one is set.
    ///
    /// ```
    /// use virtest_harness::Params;
    /// use virtest_harness::params::CPUS;
    /// let mut params = Params::defaults();
    /// assert_eq!(params.value_if_set(&CPUS).unwrap(), None);
    /// params.set("cpus", "0");
    /// let error = params.value_if_set(&CPUS).unwrap_err();
    /// assert_eq!(error.to_string(), "parameter `cpus` is `0`, which is not a whole number, at least 1");
    /// ```
    pub fn value_if_set<T: ParamValue>(
        &self,
        param: &Param<T, NoDefault>,
    ) -> Result<Option<T>, ParamError> {
        self.get_str(param.name)
            .map(|text| param.parse(text))
            .transpose()
    }
}

/// What the framework needs of every declaration, whatever its type.
pub trait Known: Sync {
    /// Its name.
    fn name(&self) -> &'static str;
    /// Its default as text (`""`: none).
    fn default(&self) -> &'static str;
    /// The default for people: the value, else what happens unset.
    fn default_shown(&self) -> &'static str;
    /// What its value must be.
    fn expected(&self) -> String;
    /// What it does.
    fn help(&self) -> &'static str;
    /// Whether `text` is a value of its type.
    fn accepts(&self, text: &str) -> bool;
}

impl<T: ParamValue, D> Known for Param<T, D> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn default(&self) -> &'static str {
        self.default
    }
    fn default_shown(&self) -> &'static str {
        if self.default.is_empty() {
            self.unset
        } else {
            self.default
        }
    }
    fn expected(&self) -> String {
        T::expected()
    }
    fn help(&self) -> &'static str {
        self.help
    }
    fn accepts(&self, text: &str) -> bool {
        T::parse(text).is_some()
    }
}

/// `qemu_bin`.
pub const QEMU_BIN: Param<QemuChoice, NoDefault> = Param::optional(
    "qemu_bin",
    "`$QEMU`, then `qemu-system-x86_64` on PATH (for an aarch64 guest: `$QEMU_AARCH64`, then `qemu-system-aarch64`)",
    "the QEMU system emulator; a version is the host's QEMU if it is that one, else the cache's (`virtest bootstrap --qemu 10.0` fetches it)",
);
/// `qemu_dst_bin`.
pub const QEMU_DST_BIN: Param<QemuChoice, NoDefault> = Param::optional(
    "qemu_dst_bin",
    "the source's",
    "QEMU for a migration's destination, as `qemu_bin`; VMs then run on a versioned machine type both QEMUs have (`pc-q35-7.2`)",
);
/// `pin_machine_type`.
pub const PIN_MACHINE_TYPE: Param<bool> = Param::new(
    "pin_machine_type",
    "true",
    "with `qemu_dst_bin`, run VMs on a versioned machine type both QEMUs have; `false` leaves `-machine` as written, and QEMU refuses a migration between two types in its own words",
);
/// `qemu_img_bin`.
pub const QEMU_IMG_BIN: Param<PathBuf, NoDefault> = Param::optional(
    "qemu_img_bin",
    "`$QEMU_IMG`, then PATH",
    "qemu-img, which makes each VM's disk overlays",
);
/// `guest`.
pub const GUEST: Param<String> = Param::new(
    "guest",
    "default",
    "a `guest.toml`, its directory, or a built-in guest: `default` (the tiny guest), `default-arm64` (the tiny guest for aarch64), `debian`",
);
/// `guest_user`.
pub const GUEST_USER: Param<String, NoDefault> = Param::optional(
    "guest_user",
    "the guest's",
    "the user `login_remote` logs in as",
);
/// `guest_password`.
pub const GUEST_PASSWORD: Param<String, NoDefault> = Param::optional(
    "guest_password",
    "(the guest's key is used)",
    "log in by password; never written to logs or results",
);
/// `accel`.
pub const ACCEL: Param<Accel> = Param::new(
    "accel",
    "auto",
    "the accelerator: `auto` takes KVM only where it can boot a guest, else TCG",
);
/// `memory`.
pub const MEMORY: Param<NonZeroU32, NoDefault> =
    Param::optional("memory", "the guest's (256)", "guest memory in MiB");
/// `cpus`.
pub const CPUS: Param<NonZeroU32, NoDefault> =
    Param::optional("cpus", "the guest's (1)", "guest processors");
/// `tpm`.
pub const TPM: Param<bool, NoDefault> = Param::optional(
    "tpm",
    "the guest's (false)",
    "give each VM a TPM 2.0 (an swtpm of its own: `apt-get install swtpm`); it moves with a live migration. The guest must boot from its disk (the Debian guest), not a kernel and initrd QEMU loads",
);
/// `login_timeout`.
pub const LOGIN_TIMEOUT: Param<Duration, NoDefault> = Param::optional(
    "login_timeout",
    "the guest's (60), scaled (`timeout_scale`)",
    "seconds `login_remote` waits; a guest description may set its own",
);
/// `keep_disks`.
pub const KEEP_DISKS: Param<bool> = Param::new(
    "keep_disks",
    "false",
    "keep each VM's disk overlays after the test (a failed test always keeps them, listed in `results.json`)",
);
/// `boot`.
pub const BOOT: Param<BootMode> = Param::new(
    "boot",
    "snapshot",
    "`snapshot`: start VMs from the guest's ready snapshot (the first VM that needs one makes it); `fresh`: boot. Tests of booting (`boot`, `reboot`) always boot",
);
/// `snapshot_format`.
pub const SNAPSHOT_FORMAT: Param<StateFormat> = Param::new(
    "snapshot_format",
    "stream",
    "how a ready snapshot's state is written: `stream` (QEMU's migration stream; it restores faster here) or `mapped-ram` (QEMU 9.0 on, a snapshot of its own)",
);
/// `migration_mode`.
pub const MIGRATION_MODE: Param<MigrationMode> =
    Param::new("migration_mode", "tcp", "the migration transport");
/// `migration_feature`.
pub const MIGRATION_FEATURE: Param<Feature> = Param::new(
    "migration_feature",
    "precopy",
    "the feature the `migration_matrix` test migrates under (`tls-wrong-*` and `cancel-*` must fail cleanly; `mapped-ram*` need the file transport)",
);
/// `migration_hosts`.
pub const MIGRATION_HOSTS: Param<Vec<String>, NoDefault> = Param::optional(
    "migration_hosts",
    "(this host)",
    "hosts the migration test moves its VM between (`a,b`): it starts on the first, and each migration goes to the next in the list, round; simulated on this machine (root) unless `hosts` names them",
);
/// `hosts`.
pub const HOSTS: Param<PathBuf, NoDefault> = Param::optional(
    "hosts",
    "(simulated)",
    "a hosts.toml naming real hosts (address, user, key, qemu, storage) that `t.add_host(name)` reaches over SSH; without it hosts are simulated on this machine",
);
/// `migration_iterations`.
pub const MIGRATION_ITERATIONS: Param<u32> = Param::new(
    "migration_iterations",
    "4",
    "migrations the migration test does",
);
/// `timeout_scale`.
pub const TIMEOUT_SCALE: Param<TimeoutScale> = Param::new(
    "timeout_scale",
    "auto",
    "what default login, start and migration timeouts are multiplied by: `auto` measures this host once per cache (the default guest's boot, against 4 s) and never shortens them; `off`; or a factor",
);
/// `migrate_timeout`.
pub const MIGRATE_TIMEOUT: Param<Duration, NoDefault> = Param::optional(
    "migrate_timeout",
    "60, scaled (`timeout_scale`)",
    "seconds one migration may take before it is cancelled",
);
/// `migrate_max_bandwidth`.
pub const MIGRATE_MAX_BANDWIDTH: Param<NonZeroU64, NoDefault> = Param::optional(
    "migrate_max_bandwidth",
    "no cap",
    "MiB/s a migration may use (`max-bandwidth`). virtest's migrations stay on the host, so none is capped unless asked; QEMU's own default, 128 in 7.2, made the tiny guest's migration take 0.6 s instead of 0.12-0.38 s",
);
/// `migration_caps`.
pub const MIGRATION_CAPS: Param<Vec<String>, NoDefault> = Param::optional(
    "migration_caps",
    "(none)",
    "migration capabilities to turn on, by QEMU's names (`postcopy-ram,validate-uuid`; `postcopy` for short; `multifd` with 2 channels, `xbzrle` with a 64 MiB cache): checked against the source QEMU's, and an unknown one is an error listing them",
);
/// `multifd_channels`.
pub const MULTIFD_CHANNELS: Param<NonZeroU32, NoDefault> = Param::optional(
    "multifd_channels",
    "(no multifd)",
    "migrate over multifd with this many channels (tcp and unix transports)",
);
/// `multifd_compression`.
pub const MULTIFD_COMPRESSION: Param<String, NoDefault> = Param::optional(
    "multifd_compression",
    "QEMU's (`none`)",
    "multifd's compression, by QEMU's name (`zlib`, `zstd`); turns multifd on",
);
/// `migration_params`.
pub const MIGRATION_PARAMS: Param<Vec<(String, String)>, NoDefault> = Param::optional(
    "migration_params",
    "(none)",
    "more migration parameters as `name=value`, by QEMU's names (`downtime-limit=100`): checked against the source QEMU's, and an unknown one is an error listing them",
);
/// `tls`.
pub const TLS: Param<Tls, NoDefault> = Param::optional(
    "tls",
    "(none)",
    "encrypt migrations with credentials made per VM: `psk` (a pre-shared key) or `x509` (certificates from a CA made for it); tcp, unix and fd transports",
);
/// `tls_hostname`.
pub const TLS_HOSTNAME: Param<String, NoDefault> = Param::optional(
    "tls_hostname",
    "the transport's host",
    "the name an x509 migration checks the destination's certificate against (it is made for `localhost` and `127.0.0.1`: another name makes the migration fail)",
);
/// `timeout`.
pub const TIMEOUT: Param<Duration> = Param::new(
    "timeout",
    "600",
    "seconds per test for setup and action (cleanup has its own 120)",
);
/// `evidence_timeout`.
pub const EVIDENCE_TIMEOUT: Param<Duration> = Param::new(
    "evidence_timeout",
    "30",
    "seconds a failed test's failure bundle (screen, console, events, guest view) may take; 0 gathers none",
);
/// `forward_ports`.
pub const FORWARD_PORTS: Param<Vec<u16>, NoDefault> = Param::optional(
    "forward_ports",
    "(none)",
    "guest TCP ports forwarded from 127.0.0.1 besides SSH (`80,443`); `vm.forwarded_port(80)` says where",
);

/// Every parameter the framework knows, avocado-virt's among them, in
/// the order people read them.
pub const KNOWN: &[&dyn Known] = &[
    &QEMU_BIN,
    &QEMU_DST_BIN,
    &PIN_MACHINE_TYPE,
    &QEMU_IMG_BIN,
    &GUEST,
    &GUEST_USER,
    &GUEST_PASSWORD,
    &ACCEL,
    &MEMORY,
    &CPUS,
    &TPM,
    &LOGIN_TIMEOUT,
    &TIMEOUT_SCALE,
    &KEEP_DISKS,
    &BOOT,
    &SNAPSHOT_FORMAT,
    &MIGRATION_MODE,
    &MIGRATION_FEATURE,
    &MIGRATION_ITERATIONS,
    &MIGRATION_HOSTS,
    &HOSTS,
    &MIGRATE_TIMEOUT,
    &MIGRATE_MAX_BANDWIDTH,
    &MIGRATION_CAPS,
    &MULTIFD_CHANNELS,
    &MULTIFD_COMPRESSION,
    &MIGRATION_PARAMS,
    &TLS,
    &TLS_HOSTNAME,
    &TIMEOUT,
    &EVIDENCE_TIMEOUT,
    &FORWARD_PORTS,
];

/// The README's table of [`KNOWN`], in Markdown: generated here, checked
/// against the README by a test, so the two never differ.
pub fn markdown_table() -> String {
    let mut table = String::from("| key | value | default | meaning |\n|---|---|---|---|\n");
    for known in KNOWN {
        let default = match known.default() {
            "" => known.default_shown().to_string(),
            value => format!("`{value}`"),
        };
        table.push_str(&format!(
            "| `{}` | {} | {default} | {} |\n",
            known.name(),
            known.expected(),
            known.help()
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_is_a_value_of_its_type_and_names_are_unique() {
        for known in KNOWN {
            assert!(
                known.default().is_empty() || known.accepts(known.default()),
                "the default of `{}` is not {}",
                known.name(),
                known.expected()
            );
            assert!(!known.default_shown().is_empty(), "{}", known.name());
            let same = KNOWN.iter().filter(|k| k.name() == known.name()).count();
            assert_eq!(same, 1, "`{}` is declared {same} times", known.name());
        }
    }

    #[test]
    fn the_table_has_a_row_per_parameter_with_its_default() {
        let table = markdown_table();
        assert_eq!(table.lines().count(), KNOWN.len() + 2);
        assert!(table.contains("| `timeout` | a number of seconds | `600` | seconds per test"));
        assert!(table.contains(
            "| `memory` | a whole number, at least 1 | the guest's (256) | guest memory in MiB |"
        ));
    }
}
