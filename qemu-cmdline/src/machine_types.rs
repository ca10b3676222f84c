//! Machine types across QEMU versions. A VM migrates only to a QEMU that
//! runs its versioned machine type: QEMU 10.0 refuses the state of a 7.2
//! `q35` with "Machine type received is 'pc-q35-7.2' and local is
//! 'pc-q35-10.0'", since `q35` stands for each version's newest type. A VM
//! that moves between versions runs on a versioned type both have.

use std::path::PathBuf;

use crate::binary::Probe;
use crate::error::{Error, Result};

/// Two QEMUs share no machine type a VM can migrate between them on.
#[derive(Debug, thiserror::Error)]
#[error(
    "no machine type for `{wanted}` is in both `{source_qemu}` ({source_type}) and \
     `{destination_qemu}` ({destination_type}): a VM migrates only between QEMUs that have \
     its versioned machine type{hint}"
)]
pub struct NoSharedMachine {
    /// The machine type asked for (`q35`).
    pub wanted: String,
    /// The source QEMU.
    pub source_qemu: PathBuf,
    /// What `wanted` is there, or that it has none.
    pub source_type: String,
    /// The destination QEMU.
    pub destination_qemu: PathBuf,
    /// What `wanted` is there, or that it has none.
    pub destination_type: String,
    /// What to do, if anything can be (`; start the VM on ...`).
    pub hint: String,
}

/// The versioned machine type a VM asking for `wanted` (`q35`, `pc`, or
/// a versioned type) runs on so that it can migrate between `source` and
/// `destination`: for an alias, the older QEMU's own type (`pc-q35-7.2`
/// between 7.2 and 10.0), or the newest of its family both have. `None`
/// when `wanted` is the same type on both, so nothing needs pinning. A
/// versioned type the destination lacks is an error, never replaced.
///
/// ```
/// use std::path::PathBuf;
/// use virtest_qemu_cmdline::binary::{Probe, Version};
/// use virtest_qemu_cmdline::machine_types::shared;
/// let qemu = |v: Version, machines: &[&str]| Probe {
///     path: PathBuf::from(format!("qemu-{v}")),
///     version: v,
///     version_line: String::new(),
///     accelerators: vec!["tcg".into()],
///     machines: machines.iter().map(|m| m.to_string()).collect(),
///     machine_aliases: vec![("q35".into(), machines[0].to_string())],
/// };
/// let v7 = qemu(Version { major: 7, minor: 2, micro: 22 }, &["pc-q35-7.2", "pc-q35-7.1"]);
/// let v10 = qemu(Version { major: 10, minor: 0, micro: 2 }, &["pc-q35-10.0", "pc-q35-7.2"]);
/// assert_eq!(shared(&v7, &v10, "q35")?.as_deref(), Some("pc-q35-7.2"));
/// assert_eq!(shared(&v10, &v7, "q35")?.as_deref(), Some("pc-q35-7.2"));
/// assert_eq!(shared(&v7, &v7, "q35")?, None);
/// # Ok::<(), virtest_qemu_cmdline::Error>(())
/// ```
pub fn shared(source: &Probe, destination: &Probe, wanted: &str) -> Result<Option<String>> {
    let on_source = source.resolve_machine(wanted);
    let on_destination = destination.resolve_machine(wanted);
    if on_source.is_some() && on_source == on_destination {
        return Ok(None);
    }
    let error = || {
        Error::NoSharedMachine(Box::new(NoSharedMachine {
            wanted: wanted.to_string(),
            source_qemu: source.path.clone(),
            source_type: described(on_source),
            destination_qemu: destination.path.clone(),
            destination_type: described(on_destination),
            hint: String::new(),
        }))
    };
    // A type asked for by its versioned name is kept, or refused.
    if on_source == Some(wanted) {
        return Err(error());
    }
    let both = |machine: &str| {
        source.machines.iter().any(|m| m == machine)
            && destination.machines.iter().any(|m| m == machine)
    };
    let versioned: Vec<(&str, Vec<u32>)> = [on_source, on_destination]
        .into_iter()
        .flatten()
        .filter_map(|m| split(m).map(|(_, version)| (m, version)))
        .collect();
    let older = versioned.iter().min_by(|a, b| a.1.cmp(&b.1));
    let chosen = older.and_then(|(machine, older_version)| {
        if both(machine) {
            return Some(machine.to_string());
        }
        // The newest type of the family both have, no newer than the
        // older QEMU's own.
        let family = split(machine)?.0;
        source
            .machines
            .iter()
            .filter(|m| both(m))
            .filter_map(|m| split(m).map(|(f, v)| (m, f, v)))
            .filter(|(_, f, v)| *f == family && v <= older_version)
            .max_by(|a, b| a.2.cmp(&b.2))
            .map(|(m, _, _)| m.clone())
    });
    chosen.map(Some).ok_or_else(error)
}

/// `pc-q35-7.2` is family `pc-q35` at version `[7, 2]`.
fn split(machine: &str) -> Option<(&str, Vec<u32>)> {
    let (family, version) = machine.rsplit_once('-')?;
    let numbers: Option<Vec<u32>> = version.split('.').map(|n| n.parse().ok()).collect();
    numbers.map(|n| (family, n))
}

fn described(machine: Option<&str>) -> String {
    match machine {
        Some(machine) => format!("there `{machine}`"),
        None => "not there".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::binary::Version;

    fn qemu(minor: u32, machines: &[&str], alias: &str) -> Probe {
        Probe {
            path: PathBuf::from(format!("qemu-x.{minor}")),
            version: Version {
                major: 1,
                minor,
                micro: 0,
            },
            version_line: String::new(),
            accelerators: vec!["tcg".into()],
            machines: machines.iter().map(|m| m.to_string()).collect(),
            machine_aliases: vec![("q35".into(), alias.into())],
        }
    }

    #[test]
    fn an_older_type_the_newer_qemu_lacks_falls_back_to_the_newest_shared_one() {
        let old = qemu(2, &["pc-q35-7.2", "pc-q35-7.1", "pc-q35-7.0"], "pc-q35-7.2");
        let new = qemu(9, &["pc-q35-9.0", "pc-q35-7.1", "pc-q35-7.0"], "pc-q35-9.0");
        assert_eq!(
            shared(&old, &new, "q35").unwrap().as_deref(),
            Some("pc-q35-7.1")
        );
    }

    #[test]
    fn a_pinned_type_both_have_needs_nothing_and_one_neither_shares_is_an_error() {
        let old = qemu(2, &["pc-q35-7.2", "pc-q35-7.1"], "pc-q35-7.2");
        let new = qemu(9, &["pc-q35-9.0", "pc-q35-7.2"], "pc-q35-9.0");
        assert_eq!(shared(&old, &new, "pc-q35-7.2").unwrap(), None);
        let error = shared(&new, &old, "pc-q35-9.0").unwrap_err().to_string();
        assert!(error.contains("(there `pc-q35-9.0`)"), "{error}");
        assert!(error.contains("(not there)"), "{error}");
        let unversioned = qemu(9, &["microvm"], "microvm");
        let other = qemu(2, &["microvm-x"], "microvm-x");
        assert!(shared(&unversioned, &other, "q35").is_err());
    }
}
