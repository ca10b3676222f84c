//! The migration features a matrix runs a guest under, by name: each is
//! a change to a [`MigrationSpec`], the capabilities it needs from QEMU,
//! and whether it must fail (cleanly: the source runs on).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::spec::{CancelPoint, MigrationSpec};
use crate::tls::Tls;

/// A migration feature, as a matrix names it (`multifd-zstd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Plain precopy.
    Precopy,
    /// Postcopy, switched to as soon as the migration is active.
    Postcopy,
    /// Postcopy, paused once it is active (`migrate-pause`) and
    /// recovered over a new channel.
    PostcopyRecover,
    /// multifd with 4 channels.
    Multifd,
    /// multifd with 4 channels, compressed with zstd.
    MultifdZstd,
    /// xbzrle with a 64 MiB cache.
    Xbzrle,
    /// auto-converge.
    AutoConverge,
    /// TLS with a pre-shared key.
    TlsPsk,
    /// TLS with x509 certificates.
    TlsX509,
    /// TLS with x509, the source checking another name than the
    /// certificate's: must fail.
    TlsWrongHostname,
    /// TLS with x509, the destination holding certificates of another
    /// CA: must fail.
    TlsWrongCredentials,
    /// Cancelled once in `setup`: must fail.
    CancelSetup,
    /// Cancelled once `active`: must fail.
    CancelActive,
    /// Cancelled in `pre-switchover`, the last point before the devices'
    /// state: must fail.
    CancelPreSwitchover,
    /// validate-uuid: the destination checks it is the same machine.
    ValidateUuid,
    /// switchover-ack: the source waits for the destination's go before
    /// it stops the guest (QEMU 8.1 on).
    SwitchoverAck,
    /// mapped-ram: each page at its own place in the file (QEMU 9.0 on;
    /// the file transport only).
    MappedRam,
    /// mapped-ram written by 4 multifd channels.
    MappedRamMultifd,
}

impl Feature {
    /// Every feature, in a matrix's order.
    pub const ALL: [Feature; 18] = [
        Feature::Precopy,
        Feature::Postcopy,
        Feature::PostcopyRecover,
        Feature::Multifd,
        Feature::MultifdZstd,
        Feature::Xbzrle,
        Feature::AutoConverge,
        Feature::TlsPsk,
        Feature::TlsX509,
        Feature::TlsWrongHostname,
        Feature::TlsWrongCredentials,
        Feature::CancelSetup,
        Feature::CancelActive,
        Feature::CancelPreSwitchover,
        Feature::ValidateUuid,
        Feature::SwitchoverAck,
        Feature::MappedRam,
        Feature::MappedRamMultifd,
    ];

    /// Its name (`tls-wrong-hostname`).
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Precopy => "precopy",
            Feature::Postcopy => "postcopy",
            Feature::PostcopyRecover => "postcopy-recover",
            Feature::Multifd => "multifd",
            Feature::MultifdZstd => "multifd-zstd",
            Feature::Xbzrle => "xbzrle",
            Feature::AutoConverge => "auto-converge",
            Feature::TlsPsk => "tls-psk",
            Feature::TlsX509 => "tls-x509",
            Feature::TlsWrongHostname => "tls-wrong-hostname",
            Feature::TlsWrongCredentials => "tls-wrong-credentials",
            Feature::CancelSetup => "cancel-setup",
            Feature::CancelActive => "cancel-active",
            Feature::CancelPreSwitchover => "cancel-pre-switchover",
            Feature::ValidateUuid => "validate-uuid",
            Feature::SwitchoverAck => "switchover-ack",
            Feature::MappedRam => "mapped-ram",
            Feature::MappedRamMultifd => "mapped-ram-multifd",
        }
    }

    /// The capabilities it needs from both QEMUs, by QEMU's names.
    pub fn capabilities(self) -> &'static [&'static str] {
        match self {
            Feature::Precopy
            | Feature::TlsPsk
            | Feature::TlsX509
            | Feature::TlsWrongHostname
            | Feature::TlsWrongCredentials => &[],
            Feature::Postcopy | Feature::PostcopyRecover => &["postcopy-ram"],
            Feature::CancelSetup | Feature::CancelActive | Feature::CancelPreSwitchover => {
                &["pause-before-switchover"]
            }
            Feature::Multifd | Feature::MultifdZstd => &["multifd"],
            Feature::Xbzrle => &["xbzrle"],
            Feature::AutoConverge => &["auto-converge"],
            Feature::ValidateUuid => &["validate-uuid"],
            Feature::SwitchoverAck => &["return-path", "switchover-ack"],
            Feature::MappedRam => &["mapped-ram"],
            Feature::MappedRamMultifd => &["mapped-ram", "multifd"],
        }
    }

    /// Whether a migration under it must fail, the source running on.
    pub fn must_fail(self) -> bool {
        matches!(
            self,
            Feature::TlsWrongHostname
                | Feature::TlsWrongCredentials
                | Feature::CancelSetup
                | Feature::CancelActive
                | Feature::CancelPreSwitchover
        )
    }

    /// Whether it cancels the migration (and must end in
    /// [`Error::Cancelled`]).
    pub fn cancels(self) -> bool {
        matches!(
            self,
            Feature::CancelSetup | Feature::CancelActive | Feature::CancelPreSwitchover
        )
    }

    /// `spec` changed to migrate under this feature.
    ///
    /// ```
    /// use virtest_migration::{Feature, MigrationMode, MigrationSpec};
    /// let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    /// Feature::MultifdZstd.apply(&mut spec)?;
    /// assert_eq!(spec.multifd_channels, Some(4));
    /// assert!(spec.set_parameters().contains(&"multifd-compression=zstd".to_string()));
    /// # Ok::<(), virtest_migration::Error>(())
    /// ```
    pub fn apply(self, spec: &mut MigrationSpec) -> Result<()> {
        match self {
            Feature::Precopy => {}
            Feature::Postcopy => spec.postcopy = true,
            Feature::PostcopyRecover => {
                spec.postcopy = true;
                spec.pause_postcopy = true;
            }
            Feature::Multifd => spec.set_parameter("multifd-channels", "4")?,
            Feature::MultifdZstd => {
                spec.set_parameter("multifd-channels", "4")?;
                spec.set_parameter("multifd-compression", "zstd")?;
            }
            Feature::Xbzrle => spec.enable("xbzrle"),
            Feature::AutoConverge => spec.auto_converge = true,
            Feature::TlsPsk => spec.tls = Some(Tls::Psk),
            Feature::TlsX509 => spec.tls = Some(Tls::X509),
            Feature::TlsWrongHostname => {
                spec.tls = Some(Tls::X509);
                spec.tls_hostname = Some("not-the-destination.invalid".into());
            }
            Feature::TlsWrongCredentials => {
                spec.tls = Some(Tls::X509);
                spec.tls_foreign_destination = true;
            }
            Feature::CancelSetup => spec.cancel_after = Some(CancelPoint::Setup),
            Feature::CancelActive => spec.cancel_after = Some(CancelPoint::Active),
            Feature::CancelPreSwitchover => spec.cancel_after = Some(CancelPoint::PreSwitchover),
            Feature::ValidateUuid => spec.enable("validate-uuid"),
            Feature::SwitchoverAck => {
                spec.enable("return-path");
                spec.enable("switchover-ack");
            }
            Feature::MappedRam => spec.enable("mapped-ram"),
            Feature::MappedRamMultifd => {
                spec.enable("mapped-ram");
                spec.set_parameter("multifd-channels", "4")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Feature {
    type Err = Error;

    fn from_str(name: &str) -> Result<Feature> {
        Feature::ALL
            .into_iter()
            .find(|f| f.as_str() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Feature::ALL.iter().map(|f| f.as_str()).collect();
                Error::Spec(format!(
                    "unknown migration feature `{name}`; valid: {}",
                    names.join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode::MigrationMode;

    #[test]
    fn every_feature_parses_by_its_name_and_makes_a_valid_spec() {
        for feature in Feature::ALL {
            assert_eq!(feature.as_str().parse::<Feature>().unwrap(), feature);
            let mode = match feature {
                Feature::MappedRam | Feature::MappedRamMultifd => MigrationMode::File,
                _ => MigrationMode::Tcp,
            };
            let mut spec = MigrationSpec::new(mode);
            feature.apply(&mut spec).unwrap();
            spec.validate().unwrap();
        }
        let error = "warp".parse::<Feature>().unwrap_err().to_string();
        assert!(error.contains("valid: precopy, postcopy"), "{error}");
    }

    #[test]
    fn features_a_transport_cannot_carry_are_refused_by_the_spec() {
        let mut spec = MigrationSpec::new(MigrationMode::Exec);
        Feature::SwitchoverAck.apply(&mut spec).unwrap();
        assert!(spec.validate().is_err());
        let mut spec = MigrationSpec::new(MigrationMode::Exec);
        Feature::Multifd.apply(&mut spec).unwrap();
        assert!(spec.validate().is_err());
        let mut spec = MigrationSpec::new(MigrationMode::Exec);
        Feature::TlsPsk.apply(&mut spec).unwrap();
        assert!(spec.validate().is_err(), "a pipe cannot carry a handshake");
        spec.mode = MigrationMode::Fd;
        spec.validate().unwrap();
    }
}
