//! What a parameter's text becomes: [`ParamValue`] and its impls for the
//! types the framework's parameters have.

use std::num::{NonZeroU32, NonZeroU64};
use std::path::PathBuf;
use std::time::Duration;

use virtest_migration::{Feature, MigrationMode, Tls};
use virtest_qemu_cmdline::accel::Accel;
use virtest_vm::{BootMode, StateFormat};

use crate::host_speed::TimeoutScale;

/// A type a parameter's text becomes.
pub trait ParamValue: Sized {
    /// What the text must be, in words (`a number of seconds`).
    fn expected() -> String;
    /// The value the text stands for, if it stands for one.
    fn parse(text: &str) -> Option<Self>;
}

impl ParamValue for String {
    fn expected() -> String {
        "text".into()
    }
    fn parse(text: &str) -> Option<String> {
        Some(text.to_string())
    }
}

impl ParamValue for PathBuf {
    fn expected() -> String {
        "a path".into()
    }
    fn parse(text: &str) -> Option<PathBuf> {
        Some(PathBuf::from(text))
    }
}

impl ParamValue for bool {
    fn expected() -> String {
        "true or false".into()
    }
    fn parse(text: &str) -> Option<bool> {
        text.parse().ok()
    }
}

impl ParamValue for u32 {
    fn expected() -> String {
        "a whole number".into()
    }
    fn parse(text: &str) -> Option<u32> {
        text.parse().ok()
    }
}

impl ParamValue for NonZeroU32 {
    fn expected() -> String {
        "a whole number, at least 1".into()
    }
    fn parse(text: &str) -> Option<NonZeroU32> {
        text.parse().ok()
    }
}

impl ParamValue for NonZeroU64 {
    fn expected() -> String {
        "a whole number, at least 1".into()
    }
    fn parse(text: &str) -> Option<NonZeroU64> {
        text.parse().ok()
    }
}

/// Seconds, fractions allowed.
impl ParamValue for Duration {
    fn expected() -> String {
        "a number of seconds".into()
    }
    fn parse(text: &str) -> Option<Duration> {
        let seconds = text.parse::<f64>().ok()?;
        (seconds >= 0.0 && seconds.is_finite()).then(|| Duration::from_secs_f64(seconds))
    }
}

/// TCP ports, comma-separated (`80, 443`); empty text is no ports.
impl ParamValue for Vec<u16> {
    fn expected() -> String {
        "TCP ports 1-65535, comma-separated (80,443)".into()
    }
    fn parse(text: &str) -> Option<Vec<u16>> {
        text.split(',')
            .map(str::trim)
            .filter(|port| !port.is_empty())
            .map(|port| port.parse::<u16>().ok().filter(|&p| p != 0))
            .collect()
    }
}

impl ParamValue for Vec<String> {
    fn expected() -> String {
        "names, comma-separated (postcopy-ram,validate-uuid)".into()
    }
    fn parse(text: &str) -> Option<Vec<String>> {
        let names: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect();
        let valid = |name: &String| name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        names.iter().all(valid).then_some(names)
    }
}

impl ParamValue for Vec<(String, String)> {
    fn expected() -> String {
        "`name=value` pairs, comma-separated (downtime-limit=100)".into()
    }
    fn parse(text: &str) -> Option<Vec<(String, String)>> {
        text.split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=')?;
                let named =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
                (named && !value.is_empty()).then(|| (name.to_string(), value.to_string()))
            })
            .collect()
    }
}

/// `one of a, b, c`.
fn one_of(names: &[&str]) -> String {
    format!("one of {}", names.join(", "))
}

impl ParamValue for MigrationMode {
    fn expected() -> String {
        one_of(&MigrationMode::ALL.map(MigrationMode::as_str))
    }
    fn parse(text: &str) -> Option<MigrationMode> {
        text.parse().ok()
    }
}

impl ParamValue for Feature {
    fn expected() -> String {
        one_of(&Feature::ALL.map(Feature::as_str))
    }
    fn parse(text: &str) -> Option<Feature> {
        text.parse().ok()
    }
}

impl ParamValue for Tls {
    fn expected() -> String {
        one_of(&Tls::ALL.map(Tls::as_str))
    }
    fn parse(text: &str) -> Option<Tls> {
        text.parse().ok()
    }
}

impl ParamValue for Accel {
    fn expected() -> String {
        one_of(&Accel::NAMES)
    }
    fn parse(text: &str) -> Option<Accel> {
        text.parse().ok()
    }
}

impl ParamValue for BootMode {
    fn expected() -> String {
        one_of(&BootMode::NAMES)
    }
    fn parse(text: &str) -> Option<BootMode> {
        BootMode::parse(text)
    }
}

impl ParamValue for StateFormat {
    fn expected() -> String {
        one_of(&StateFormat::NAMES)
    }
    fn parse(text: &str) -> Option<StateFormat> {
        StateFormat::parse(text)
    }
}

impl ParamValue for TimeoutScale {
    fn expected() -> String {
        "`auto`, `off`, or a factor from 0.1 to 100".into()
    }
    fn parse(text: &str) -> Option<TimeoutScale> {
        text.parse().ok()
    }
}
