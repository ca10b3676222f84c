//! How fast this host runs guests, and the timeouts that follow from it.
//!
//! The measure is the default guest's boot, power_on to its ready line,
//! taken [`RUNS`] times (the median kept) once per cache for each QEMU
//! binary, version and accelerator, so a new QEMU or a host that gains
//! KVM is measured again. A host slower than the one the default
//! timeouts were set on ([`REFERENCE_BOOT`]) scales them; a faster one
//! keeps them (a timeout is never shortened).
//!
//! ```
//! use std::time::Duration;
//! use virtest_harness::host_speed::scale_for;
//! assert_eq!(scale_for(Duration::from_secs(2)), 1.0);
//! assert_eq!(scale_for(Duration::from_secs(10)), 2.5);
//! assert_eq!(scale_for(Duration::from_secs(600)), 10.0);
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use virtest_guest::GuestDescription;
use virtest_qemu_cmdline::accel::{self, Accel, HostKvm};
use virtest_qemu_cmdline::binary::{self, BinaryKind};
use virtest_vm::{BootMode, Vm, VmConfig};

/// The default guest's boot on the machines the default timeouts were
/// set for: 2 cores under TCG, where it takes 3 to 4.5 s.
pub const REFERENCE_BOOT: Duration = Duration::from_secs(4);

/// The most a timeout is scaled: past it, a host is too slow to test on.
pub const MAX_SCALE: f64 = 10.0;

/// How many boots a measure takes.
pub const RUNS: usize = 3;

/// The file in the cache that holds the measures.
const FILE: &str = "host-speed.json";

/// How default timeouts are scaled (the parameter `timeout_scale`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeoutScale {
    /// By this host's measured speed (the runner measures it once per
    /// cache and puts the factor in each test's parameters).
    Auto,
    /// Not at all.
    Off,
    /// By this factor.
    Factor(f64),
}

impl TimeoutScale {
    /// The factor (1 for `off`, and for `auto` where nothing measured).
    pub fn factor(self) -> f64 {
        match self {
            TimeoutScale::Factor(factor) => factor,
            TimeoutScale::Auto | TimeoutScale::Off => 1.0,
        }
    }
}

impl std::str::FromStr for TimeoutScale {
    type Err = ();

    /// `auto`, `off`, or a factor from 0.1 to 100.
    fn from_str(text: &str) -> Result<TimeoutScale, ()> {
        match text {
            "auto" => Ok(TimeoutScale::Auto),
            "off" => Ok(TimeoutScale::Off),
            _ => match text.parse::<f64>() {
                Ok(factor) if (0.1..=100.0).contains(&factor) => Ok(TimeoutScale::Factor(factor)),
                _ => Err(()),
            },
        }
    }
}

/// A measure of this host with one QEMU and accelerator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSpeed {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// Its `--version` line.
    pub qemu_version: String,
    /// The accelerator the guests ran under (`tcg`, `kvm`).
    pub accel: String,
    /// Each boot, power_on to the ready line, in ms.
    pub boots_ms: Vec<u64>,
}

impl HostSpeed {
    /// The median boot.
    pub fn boot(&self) -> Duration {
        let mut boots = self.boots_ms.clone();
        boots.sort_unstable();
        Duration::from_millis(boots.get(boots.len() / 2).copied().unwrap_or_default())
    }

    /// The factor default timeouts are scaled by on this host.
    pub fn scale(&self) -> f64 {
        scale_for(self.boot())
    }

    fn is_for(&self, target: &Target) -> bool {
        self.qemu == target.qemu
            && self.qemu_version == target.qemu_version
            && self.accel == target.accel.as_str()
    }
}

/// The factor for a host whose default guest boots in `boot`: its ratio
/// to [`REFERENCE_BOOT`], at least 1 and at most [`MAX_SCALE`], to two
/// decimals.
pub fn scale_for(boot: Duration) -> f64 {
    let ratio = boot.as_secs_f64() / REFERENCE_BOOT.as_secs_f64();
    (ratio.clamp(1.0, MAX_SCALE) * 100.0).round() / 100.0
}

/// What a measure is of: a QEMU binary, its version, and the accelerator
/// `accel::choose` gives it here, with why.
#[derive(Debug, Clone)]
pub struct Target {
    /// The binary.
    pub qemu: PathBuf,
    /// Its `--version` line.
    pub qemu_version: String,
    /// The accelerator chosen.
    pub accel: accel::Chosen,
    /// Why that one (for TCG: why not KVM).
    pub reason: String,
}

impl Target {
    /// The target of VMs started with `qemu` (`None`: the one VMs find)
    /// under `asked`; an error says why that QEMU cannot run guests.
    pub fn resolve(qemu: Option<&Path>, asked: Accel) -> Result<Target, String> {
        let qemu = binary::find(BinaryKind::System, qemu).map_err(|e| e.to_string())?;
        let probe = binary::probe(&qemu).map_err(|e| e.to_string())?;
        let decision = accel::choose(asked, &HostKvm::detect(), probe.has_accel("kvm"))
            .map_err(|e| e.to_string())?;
        Ok(Target {
            qemu,
            qemu_version: probe.version_line.clone(),
            accel: decision.accel,
            reason: decision.reason.to_string(),
        })
    }
}

/// The measure of `target` kept in the cache `home`, if there is one.
pub fn cached(home: &Path, target: &Target) -> Option<HostSpeed> {
    read_all(home).into_iter().find(|s| s.is_for(target))
}

/// Measures `target` by booting the default guest of `home` [`RUNS`]
/// times, and keeps the measure in `home` (a measure that cannot be kept
/// is still returned, with a warning in the log).
pub async fn measure(home: &Path, target: &Target) -> Result<HostSpeed, virtest_vm::Error> {
    let dir = virtest_guest::cache::guest_dir(home, virtest_guest::guests::DEFAULT);
    let (guest, _) = GuestDescription::load(&dir).map_err(|source| virtest_vm::Error::Guest {
        guest: dir.clone(),
        source,
    })?;
    let mut boots_ms = Vec::new();
    for _ in 0..RUNS {
        let mut config = VmConfig::new(guest.clone());
        config.qemu = Some(target.qemu.clone());
        config.accel = match target.accel {
            accel::Chosen::Kvm => Accel::Kvm,
            accel::Chosen::Tcg => Accel::Tcg,
        };
        config.boot = BootMode::Fresh;
        config.agent = false;
        let mut vm = Vm::new(config);
        let started = Instant::now();
        vm.power_on().await?;
        vm.within(REFERENCE_BOOT.mul_f64(MAX_SCALE))
            .wait_ready()
            .await?;
        boots_ms.push(started.elapsed().as_millis() as u64);
        vm.within(Duration::from_secs(5)).power_off().await?;
    }
    let speed = HostSpeed {
        qemu: target.qemu.clone(),
        qemu_version: target.qemu_version.clone(),
        accel: target.accel.as_str().to_string(),
        boots_ms,
    };
    let mut all = read_all(home);
    all.retain(|s| !s.is_for(target));
    all.push(speed.clone());
    let path = home.join(FILE);
    let text = serde_json::to_vec_pretty(&all).expect("measures serialize");
    if let Err(e) = crate::results::write_atomic(&path, &text) {
        tracing::warn!(path = %path.display(), error = %e, "the host's speed cannot be kept");
    }
    Ok(speed)
}

fn read_all(home: &Path) -> Vec<HostSpeed> {
    std::fs::read(home.join(FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_is_auto_off_or_a_factor() {
        assert_eq!("auto".parse(), Ok(TimeoutScale::Auto));
        assert_eq!("off".parse::<TimeoutScale>().unwrap().factor(), 1.0);
        assert_eq!("2.5".parse(), Ok(TimeoutScale::Factor(2.5)));
        for bad in ["0", "-1", "1000", "fast", ""] {
            assert_eq!(bad.parse::<TimeoutScale>(), Err(()), "{bad}");
        }
    }

    #[test]
    fn the_median_boot_sets_the_scale() {
        let speed = HostSpeed {
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            qemu_version: "QEMU emulator version 7.2.22".into(),
            accel: "tcg".into(),
            boots_ms: vec![30_000, 9_000, 10_000],
        };
        assert_eq!(speed.boot(), Duration::from_secs(10));
        assert_eq!(speed.scale(), 2.5);
        assert_eq!(scale_for(Duration::from_millis(4_999)), 1.25);
    }

    #[test]
    fn measures_are_kept_per_qemu_and_accelerator() {
        let home = tempfile::tempdir().unwrap();
        let speed = HostSpeed {
            qemu: "/q".into(),
            qemu_version: "7.2".into(),
            accel: "tcg".into(),
            boots_ms: vec![4000],
        };
        std::fs::write(
            home.path().join(FILE),
            serde_json::to_vec(&[&speed]).unwrap(),
        )
        .unwrap();
        let target = |qemu: &str, version: &str, accel| Target {
            qemu: qemu.into(),
            qemu_version: version.into(),
            accel,
            reason: String::new(),
        };
        let tcg = accel::Chosen::Tcg;
        assert_eq!(cached(home.path(), &target("/q", "7.2", tcg)), Some(speed));
        assert_eq!(cached(home.path(), &target("/q", "10.0", tcg)), None);
        assert_eq!(cached(home.path(), &target("/other", "7.2", tcg)), None);
        let kvm = target("/q", "7.2", accel::Chosen::Kvm);
        assert_eq!(cached(home.path(), &kvm), None);
        std::fs::write(home.path().join(FILE), "not json").unwrap();
        assert_eq!(cached(home.path(), &target("/q", "7.2", tcg)), None);
    }
}
