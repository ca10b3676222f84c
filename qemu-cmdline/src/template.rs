//! User templates: a base command line (avocado-virt's `--qemu-template`)
//! merged with what the framework adds. Where both set the same thing,
//! the template wins, and the merge says so in the debug log.

use std::path::{Path, PathBuf};

use crate::args::Arg;
use crate::cmdline::{ParseWarning, QemuCmdline};
use crate::error::{Error, Result};

impl QemuCmdline {
    /// Reads a template file: a command line written as a shell would
    /// (quotes, backslash-newlines, `#` comments), with or without the
    /// binary first. Options it does not model are kept and warned about.
    pub fn load_template(
        path: &Path,
        default_binary: impl Into<PathBuf>,
    ) -> Result<(QemuCmdline, Vec<ParseWarning>)> {
        let bad = |reason: String| Error::Template {
            path: path.to_path_buf(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
        QemuCmdline::parse_text(&text, default_binary).map_err(bad)
    }

    /// Merges `ours` (what the framework would run) into `template`. The
    /// template's options come first; ours follow unless the template
    /// already sets them: the same single-valued option (`-machine`,
    /// `-m`, `-kernel`, ...), the same id of the same kind, or the same
    /// flag. Returns the merged line and one sentence per decision.
    ///
    /// ```
    /// use virtest_qemu_cmdline::QemuCmdline;
    /// let (template, _) = QemuCmdline::parse_text("-m 1024 -vnc :3", "qemu").unwrap();
    /// let mut ours = QemuCmdline::new("qemu-system-x86_64");
    /// ours.memory_mib(256).machine("q35");
    /// let (merged, log) = template.merge(&ours);
    /// assert_eq!(merged.display(), "qemu -m 1024 -vnc :3 -machine q35");
    /// assert!(log[0].contains("template's `-m 1024` over ours `-m 256`"));
    /// ```
    pub fn merge(&self, ours: &QemuCmdline) -> (QemuCmdline, Vec<String>) {
        let mut merged = self.clone();
        let mut log = Vec::new();
        for arg in &ours.args {
            match self.args.iter().find(|t| same_setting(t, arg)) {
                Some(theirs) => log.push(format!(
                    "template's `{}` over ours `{}`",
                    theirs.display(),
                    arg.display()
                )),
                None => merged.args.push(arg.clone()),
            }
        }
        for line in &log {
            tracing::debug!("QEMU template merge: {line}");
        }
        (merged, log)
    }
}

/// Whether two options set the same thing.
fn same_setting(a: &Arg, b: &Arg) -> bool {
    match (a, b) {
        (Arg::Props(oa, pa), Arg::Props(ob, pb)) if oa == ob => {
            oa.is_single()
                || oa
                    .id_key()
                    .is_some_and(|key| pa.get(key).is_some() && pa.get(key) == pb.get(key))
        }
        (Arg::Value(oa, _), Arg::Value(ob, _)) => oa == ob && oa.is_single(),
        (Arg::Flag(fa), Arg::Flag(fb)) => fa == fb,
        (Arg::Raw(ra), Arg::Raw(rb)) => ra == rb,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_file_loads_and_a_bad_one_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("template.sh");
        std::fs::write(&path, "# my template\n-m 512 \\\n  -vnc :1\n").unwrap();
        let (cmd, warnings) = QemuCmdline::load_template(&path, "qemu").unwrap();
        assert_eq!(cmd.display(), "qemu -m 512 -vnc :1");
        assert_eq!(warnings[0].option, "-vnc :1");
        std::fs::write(&path, "-append 'open").unwrap();
        let err = QemuCmdline::load_template(&path, "qemu")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("template.sh") && err.contains("not closed"),
            "{err}"
        );
        let err = QemuCmdline::load_template(&dir.path().join("none"), "qemu")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot be read"), "{err}");
    }

    #[test]
    fn the_template_wins_by_id_and_by_single_option_and_keeps_the_rest() {
        let (template, warnings) = QemuCmdline::parse_text(
            "qemu-system-x86_64 -machine pc -device e1000,netdev=n0,id=nic0 -netdev user,id=n0 -my-option x",
            "qemu",
        )
        .unwrap();
        assert_eq!(
            warnings.len(),
            1,
            "the unknown option is kept and warned about"
        );
        let mut ours = QemuCmdline::new("/usr/bin/qemu-system-x86_64");
        ours.machine("q35")
            .user_netdev("n0", &[])
            .device("virtio-rng-pci", &[])
            .device("virtio-net-pci", &[("id", "nic0")]);
        let (merged, log) = template.merge(&ours);
        assert_eq!(
            merged.display(),
            "qemu-system-x86_64 -machine pc -device e1000,netdev=n0,id=nic0 -netdev user,id=n0 -my-option x -device virtio-rng-pci"
        );
        assert_eq!(log.len(), 3, "{log:?}");
    }
}
