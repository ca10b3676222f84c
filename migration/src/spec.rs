//! What a migration is asked to do.

use std::path::PathBuf;
use std::time::Duration;

use qapi::Enum;
use qapi::qmp::{MigrationCapability, MigrationStatus};
use virtest_host::{Host, Link};

use crate::error::{Error, Result};
use crate::mode::MigrationMode;
use crate::tls::Tls;

/// The default time a migration may take before it is cancelled (as
/// avocado-virt had it).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How fast precopy, and postcopy's background copy, may go while
/// [`MigrationSpec::pause_postcopy`] waits to pause it: 8 MiB/s, a few
/// seconds of postcopy for the tiny guest.
pub const PAUSE_POSTCOPY_BANDWIDTH: u64 = 8 << 20;

/// Where a migration is cancelled ([`MigrationSpec::cancel_after`]): the
/// status QEMU reports first. The `device` state that follows
/// `pre-switchover` lasts microseconds (QEMU's own tests skip it as
/// "happens too fast"); `pre-switchover` is the last point before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelPoint {
    /// `setup`: the channel is being opened.
    Setup,
    /// `active`: RAM is being copied.
    Active,
    /// `pre-switchover`: copied, the source stopped, before the devices'
    /// state is sent.
    PreSwitchover,
}

impl CancelPoint {
    /// QEMU's name for the status.
    pub fn status(self) -> MigrationStatus {
        match self {
            CancelPoint::Setup => MigrationStatus::setup,
            CancelPoint::Active => MigrationStatus::active,
            CancelPoint::PreSwitchover => MigrationStatus::pre_switchover,
        }
    }
}

impl std::fmt::Display for CancelPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.status().name())
    }
}

/// A host's link cut while a migration crosses it, and restored after
/// `down_for`, as a network failure would. It is cut once RAM is moving:
/// under precopy at `active` (the migration then completes late, or
/// fails by its timeout with the source running); under postcopy once
/// the guest runs on the destination, where the source is then paused
/// (`migrate-pause`, as a watchdog of a lost link does: TCP tells
/// nothing for minutes) and, once the link is back and the destination
/// paused too, recovered (`migrate-recover`, `migrate` with `resume`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCut {
    /// The link (a simulated host's: [`Host::link`]).
    pub link: Link,
    /// How long it stays down.
    pub down_for: Duration,
}

/// A migration: its transport, capabilities, parameters and limits.
///
/// ```
/// use virtest_migration::{MigrationMode, MigrationSpec};
/// let mut spec = MigrationSpec::new(MigrationMode::Unix);
/// spec.multifd_channels = Some(4);
/// spec.downtime_limit_ms = Some(100);
/// spec.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSpec {
    /// The transport.
    pub mode: MigrationMode,
    /// `postcopy-ram`, switched to postcopy as soon as the migration is
    /// active.
    pub postcopy: bool,
    /// `multifd` with this many channels (tcp and unix only; QEMU's
    /// schema takes up to 255).
    pub multifd_channels: Option<u8>,
    /// `xbzrle` with a cache of this many bytes.
    pub xbzrle_cache_bytes: Option<u64>,
    /// `auto-converge`: throttle the guest's CPUs until it converges.
    pub auto_converge: bool,
    /// More capabilities to turn on, by QEMU's names (`validate-uuid`,
    /// `zero-blocks`...), on both sides. They are checked against what
    /// the source QEMU offers before anything starts; an unknown one is
    /// an error listing the valid ones.
    pub extra_capabilities: Vec<String>,
    /// More parameters, by QEMU's names and as text
    /// (`("multifd-compression", "zstd")`), on both sides: each value is
    /// given the type of the QEMU's current one. Names are checked
    /// against the source's `query-migrate-parameters` before anything
    /// starts (an unknown one is an error listing the valid ones); a
    /// value QEMU refuses is QEMU's error.
    pub extra_parameters: Vec<(String, String)>,
    /// Encrypts the stream with credentials made for the VM (tcp, unix
    /// and fd transports).
    pub tls: Option<Tls>,
    /// The name the source checks the destination's x509 certificate
    /// against (`None`: the transport's host, `127.0.0.1`; `localhost`
    /// over unix and fd, which name no host). The certificate is for
    /// `localhost` and `127.0.0.1`: another name fails the migration, and
    /// the source runs on.
    pub tls_hostname: Option<String>,
    /// Gives the destination credentials made apart from the VM's (its
    /// own CA and certificates, or its own key): the handshake must
    /// fail, and the source runs on. For testing that refusal.
    pub tls_foreign_destination: bool,
    /// `max-bandwidth` in bytes per second (`None`: no cap,
    /// [`virtest_qmp::outgoing::UNCAPPED_BANDWIDTH`], since the migration stays on
    /// this host; QEMU's own default is 128 MiB/s in 7.2).
    pub max_bandwidth: Option<u64>,
    /// `downtime-limit` in milliseconds (`None`: QEMU's default, 300).
    pub downtime_limit_ms: Option<u64>,
    /// How long the migration may take before it is cancelled.
    pub timeout: Duration,
    /// The destination's QEMU binary (`None`: the source's).
    pub destination_qemu: Option<PathBuf>,
    /// Cancels the migration once QEMU reports this status, with
    /// `pause-before-switchover` on so that it cannot complete first: the
    /// call then fails with [`Error::Cancelled`], the source running on
    /// and the destination stopped.
    pub cancel_after: Option<CancelPoint>,
    /// Under postcopy: once postcopy is active, pauses the migration
    /// (`migrate-pause`, as a broken link would), then recovers it over a
    /// new channel (`migrate-recover` on the destination, `migrate` with
    /// `resume` on the source). Until then the background copy is capped
    /// at [`PAUSE_POSTCOPY_BANDWIDTH`], so that postcopy lasts long enough
    /// to be paused, and after it uncapped (a `max-postcopy-bandwidth`
    /// among the extra parameters holds throughout); precopy too, unless
    /// `max_bandwidth` is set, so that it cannot complete before postcopy
    /// begins.
    pub pause_postcopy: bool,
    /// Wait for the guest's ready line before migrating a guest that is
    /// still booting (on by default: a test's migration then meets a
    /// booted guest). Turn it off to migrate mid-boot. (Under TCG, QEMU
    /// before 9.0 lost about one guest in four migrated mid-boot, until
    /// virtest padded guest RAM as `virtest_qemu_cmdline::quirks` says.)
    pub wait_for_boot: bool,
    /// A link cut during the migration (see [`LinkCut`]).
    pub cut_link: Option<LinkCut>,
    /// The host to migrate to (`None`: the one the VM runs on). Between
    /// hosts only tcp carries the stream, and the destination listens on
    /// the address other hosts reach it at.
    pub to: Option<Host>,
}

impl MigrationSpec {
    /// A plain migration over `mode`, with QEMU's defaults but for the
    /// bandwidth, which is not capped.
    pub fn new(mode: MigrationMode) -> MigrationSpec {
        MigrationSpec {
            mode,
            postcopy: false,
            multifd_channels: None,
            xbzrle_cache_bytes: None,
            auto_converge: false,
            extra_capabilities: Vec::new(),
            extra_parameters: Vec::new(),
            tls: None,
            tls_hostname: None,
            tls_foreign_destination: false,
            max_bandwidth: None,
            downtime_limit_ms: None,
            timeout: DEFAULT_TIMEOUT,
            destination_qemu: None,
            cancel_after: None,
            pause_postcopy: false,
            wait_for_boot: true,
            cut_link: None,
            to: None,
        }
    }

    /// Turns on the capability QEMU calls `name`: through the spec's own
    /// field for those it manages (`postcopy-ram`, or `postcopy`;
    /// `multifd` with QEMU's default 2 channels; `xbzrle` with QEMU's
    /// default 64 MiB cache; `auto-converge`; `events` is always on),
    /// else as an extra capability, checked against the QEMU.
    ///
    /// ```
    /// use virtest_migration::{MigrationMode, MigrationSpec};
    /// let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    /// spec.enable("postcopy");
    /// spec.enable("validate-uuid");
    /// assert!(spec.postcopy);
    /// assert_eq!(spec.extra_capabilities, ["validate-uuid"]);
    /// ```
    pub fn enable(&mut self, name: &str) {
        match name {
            "events" => {}
            "postcopy" | "postcopy-ram" => self.postcopy = true,
            "multifd" => self.multifd_channels = self.multifd_channels.or(Some(2)),
            "xbzrle" => self.xbzrle_cache_bytes = self.xbzrle_cache_bytes.or(Some(64 << 20)),
            "auto-converge" => self.auto_converge = true,
            other if !self.extra_capabilities.iter().any(|c| c == other) => {
                self.extra_capabilities.push(other.to_string());
            }
            _ => {}
        }
    }

    /// Sets the parameter QEMU calls `name` to `value`: through the
    /// spec's own field for those it manages (`multifd-channels`, which
    /// turns multifd on; `max-bandwidth`, `downtime-limit`,
    /// `xbzrle-cache-size`, all numbers), else as an extra parameter,
    /// checked against the QEMU.
    ///
    /// ```
    /// use virtest_migration::{MigrationMode, MigrationSpec};
    /// let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    /// spec.set_parameter("multifd-channels", "4")?;
    /// spec.set_parameter("multifd-compression", "zstd")?;
    /// assert_eq!(spec.multifd_channels, Some(4));
    /// assert_eq!(spec.extra_parameters, [("multifd-compression".to_string(), "zstd".to_string())]);
    /// assert!(spec.set_parameter("multifd-channels", "many").is_err());
    /// # Ok::<(), virtest_migration::Error>(())
    /// ```
    pub fn set_parameter(&mut self, name: &str, value: &str) -> Result<()> {
        let number = || {
            value.parse::<u64>().map_err(|_| {
                Error::Spec(format!(
                    "migration parameter `{name}` takes a whole number, not `{value}`"
                ))
            })
        };
        match name {
            "multifd-channels" => {
                let channels = number()?;
                self.multifd_channels = Some(u8::try_from(channels).map_err(|_| {
                    Error::Spec(format!("`multifd-channels` is at most 255, not {channels}"))
                })?);
            }
            "max-bandwidth" => self.max_bandwidth = Some(number()?),
            "downtime-limit" => self.downtime_limit_ms = Some(number()?),
            "xbzrle-cache-size" => self.xbzrle_cache_bytes = Some(number()?),
            other => {
                self.extra_parameters.retain(|(n, _)| n != other);
                self.extra_parameters
                    .push((other.to_string(), value.to_string()));
            }
        }
        Ok(())
    }

    /// Refuses combinations QEMU would reject halfway through.
    pub fn validate(&self) -> Result<()> {
        let mapped_ram = self.extra_capabilities.iter().any(|c| c == "mapped-ram");
        if mapped_ram && self.mode != MigrationMode::File {
            return Err(Error::Spec(format!(
                "mapped-ram lays RAM out in a file: it needs the file transport, not {}",
                self.mode
            )));
        }
        if let Some(channels) = self.multifd_channels {
            let carried = match self.mode {
                MigrationMode::Tcp | MigrationMode::Unix => true,
                MigrationMode::File => mapped_ram,
                MigrationMode::Exec | MigrationMode::Fd => false,
            };
            if !carried {
                return Err(Error::Spec(format!(
                    "multifd needs a socket transport (tcp or unix), or file with mapped-ram, \
                     not {}",
                    self.mode
                )));
            }
            if channels == 0 {
                return Err(Error::Spec("multifd needs at least one channel".into()));
            }
            if self.postcopy {
                return Err(Error::Spec(
                    "postcopy and multifd cannot be combined (QEMU refuses)".into(),
                ));
            }
        }
        // QEMU starts these over exec anyway, and waits for the
        // destination's answers until the timeout (postcopy in 7.2,
        // switchover-ack in 10.0: found by the migration matrix).
        let needs_return_path = self.postcopy.then_some("postcopy").or_else(|| {
            self.extra_capabilities
                .iter()
                .map(String::as_str)
                .find(|c| matches!(*c, "return-path" | "switchover-ack"))
        });
        if let Some(what) = needs_return_path {
            let one_way = match self.mode {
                MigrationMode::Exec => Some("exec's one-way pipe"),
                MigrationMode::File => Some("a file"),
                _ => None,
            };
            if let Some(one_way) = one_way {
                return Err(Error::Spec(format!(
                    "{what} needs a return path from the destination, which {one_way} has \
                     not: use tcp, unix or fd"
                )));
            }
        }
        // The handshake goes both ways: a pipe or a file cannot carry it.
        if let Some(tls) = self.tls
            && matches!(self.mode, MigrationMode::Exec | MigrationMode::File)
        {
            return Err(Error::Spec(format!(
                "TLS ({tls}) needs a two-way channel for its handshake (tcp, unix or fd), not {}",
                self.mode
            )));
        }
        if self.tls_hostname.is_some() && self.tls != Some(Tls::X509) {
            return Err(Error::Spec(
                "a TLS hostname is checked against x509 certificates: set tls to x509".into(),
            ));
        }
        if self.tls_foreign_destination && self.tls.is_none() {
            return Err(Error::Spec(
                "foreign TLS credentials for the destination need TLS: set tls".into(),
            ));
        }
        if self.pause_postcopy && !self.postcopy {
            return Err(Error::Spec(
                "pausing postcopy needs postcopy: set postcopy".into(),
            ));
        }
        if let Some(point) = self.cancel_after
            && self.postcopy
        {
            return Err(Error::Spec(format!(
                "cancelling after `{point}` is for precopy: a migration that switched to \
                 postcopy cannot be cancelled"
            )));
        }
        if self.cut_link.is_some() && (self.cancel_after.is_some() || self.pause_postcopy) {
            return Err(Error::Spec(
                "a link cut is a fault of its own: not with cancel_after or pause_postcopy".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(Error::Spec("the timeout must be above zero".into()));
        }
        Ok(())
    }

    /// Whether postcopy is paused and recovered: asked for, or after a
    /// link cut.
    pub(crate) fn pauses_postcopy(&self) -> bool {
        self.pause_postcopy || (self.postcopy && self.cut_link.is_some())
    }

    /// Every capability this crate manages, with the state the spec
    /// wants (`events` always on). All are set each time, because a QEMU
    /// keeps them: a destination that came in over multifd would
    /// otherwise send over multifd too.
    pub(crate) fn capabilities(&self) -> [(MigrationCapability, bool); 6] {
        [
            (MigrationCapability::events, true),
            (MigrationCapability::postcopy_ram, self.postcopy),
            (
                MigrationCapability::multifd,
                self.multifd_channels.is_some(),
            ),
            (
                MigrationCapability::xbzrle,
                self.xbzrle_cache_bytes.is_some(),
            ),
            (MigrationCapability::auto_converge, self.auto_converge),
            (
                MigrationCapability::pause_before_switchover,
                self.cancel_after.is_some(),
            ),
        ]
    }

    /// The parameters the spec sets, by QEMU's names, as text
    /// (`multifd-channels=4`): its own fields that are set, then the
    /// extra ones.
    pub fn set_parameters(&self) -> Vec<String> {
        let own = [
            ("max-bandwidth", self.max_bandwidth),
            ("downtime-limit", self.downtime_limit_ms),
            ("xbzrle-cache-size", self.xbzrle_cache_bytes),
            ("multifd-channels", self.multifd_channels.map(u64::from)),
        ];
        let tls = [
            self.tls.map(|tls| format!("tls={tls}")),
            self.tls_hostname
                .as_ref()
                .map(|h| format!("tls-hostname={h}")),
        ];
        own.into_iter()
            .filter_map(|(name, value)| Some(format!("{name}={}", value?)))
            .chain(tls.into_iter().flatten())
            .chain(
                self.extra_parameters
                    .iter()
                    .map(|(name, value)| format!("{name}={value}")),
            )
            .collect()
    }

    /// The capabilities turned on, by QEMU's names (`postcopy-ram`).
    pub fn enabled_capabilities(&self) -> Vec<String> {
        self.capabilities()
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(capability, _)| capability.name().to_string())
            .chain(self.extra_capabilities.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_combinations_are_refused_with_the_reason() {
        let mut spec = MigrationSpec::new(MigrationMode::Exec);
        spec.multifd_channels = Some(2);
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("tcp or unix")
        );
        spec.mode = MigrationMode::Tcp;
        spec.postcopy = true;
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("postcopy")
        );
        spec.postcopy = false;
        spec.multifd_channels = Some(0);
        assert!(spec.validate().is_err());
        let mut spec = MigrationSpec::new(MigrationMode::Exec);
        spec.postcopy = true;
        let error = spec.validate().unwrap_err().to_string();
        assert!(error.contains("postcopy needs a return path"), "{error}");
        spec.postcopy = false;
        spec.enable("switchover-ack");
        let error = spec.validate().unwrap_err().to_string();
        assert!(
            error.contains("switchover-ack needs a return path"),
            "{error}"
        );
        let mut spec = MigrationSpec::new(MigrationMode::File);
        spec.postcopy = true;
        let error = spec.validate().unwrap_err().to_string();
        assert!(error.contains("which a file has not"), "{error}");
        let mut spec = MigrationSpec::new(MigrationMode::File);
        spec.multifd_channels = Some(4);
        assert!(
            spec.validate().is_err(),
            "multifd into a file needs mapped-ram"
        );
        spec.enable("mapped-ram");
        spec.validate().unwrap();
        spec.mode = MigrationMode::Tcp;
        let error = spec.validate().unwrap_err().to_string();
        assert!(
            error.contains("mapped-ram lays RAM out in a file"),
            "{error}"
        );
    }

    #[test]
    fn events_are_always_on() {
        let mut spec = MigrationSpec::new(MigrationMode::Tcp);
        assert_eq!(spec.enabled_capabilities(), ["events"]);
        spec.auto_converge = true;
        spec.xbzrle_cache_bytes = Some(1 << 26);
        spec.extra_capabilities = vec!["validate-uuid".into()];
        assert_eq!(
            spec.enabled_capabilities(),
            ["events", "xbzrle", "auto-converge", "validate-uuid"]
        );
        assert!(
            spec.capabilities()
                .contains(&(MigrationCapability::multifd, false))
        );
    }
}
