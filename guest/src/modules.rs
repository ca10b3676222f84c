//! Kernel modules: finding them in a `/lib/modules/<version>` tree and
//! ordering them so each loads after what it depends on.
//!
//! Distro packages do not ship `modules.dep` (depmod writes it at install
//! time), so dependencies are read from each module's own `.modinfo`
//! section.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

use crate::error::{Error, IoContext, Result};

/// A module to put in the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Its name as the kernel knows it (`virtio_net`).
    pub name: String,
    /// Its file in the modules tree.
    pub path: PathBuf,
}

/// A `/lib/modules/<version>` tree.
#[derive(Debug)]
pub struct ModuleTree {
    dir: PathBuf,
    files: HashMap<String, PathBuf>,
    builtin: Vec<String>,
}

/// Module names compare with `-` and `_` as one.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

impl ModuleTree {
    /// Indexes the `.ko` files under `dir` and reads its `modules.builtin`.
    pub fn open(dir: &Path) -> Result<ModuleTree> {
        let mut files = HashMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).io_context("listing", &d)? {
                let path = entry.io_context("listing", &d)?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Some(stem) = path
                    .file_name()
                    .and_then(|n| n.to_str()?.strip_suffix(".ko"))
                {
                    files.insert(normalize(stem), path);
                }
            }
        }
        let builtin = std::fs::read_to_string(dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                Path::new(l)
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".ko")
                    .map(normalize)
            })
            .collect();
        Ok(ModuleTree {
            dir: dir.to_path_buf(),
            files,
            builtin,
        })
    }

    /// Whether the tree has no module files at all.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Resolves `wanted` and everything it depends on, in load order
    /// (dependencies first). Built-in modules are skipped.
    pub fn load_order(&self, wanted: &[&str]) -> Result<Vec<Module>> {
        let mut order = Vec::new();
        let mut seen = Vec::new();
        for name in wanted {
            self.visit(&normalize(name), &mut seen, &mut order)?;
        }
        Ok(order)
    }

    fn visit(&self, name: &str, seen: &mut Vec<String>, order: &mut Vec<Module>) -> Result<()> {
        if seen.iter().any(|s| s == name) {
            return Ok(());
        }
        seen.push(name.to_string());
        let Some(path) = self.files.get(name) else {
            if self.builtin.iter().any(|b| b == name) {
                return Ok(());
            }
            return Err(Error::ModuleMissing {
                name: name.to_string(),
                dir: self.dir.clone(),
            });
        };
        for dep in depends(path)? {
            self.visit(&normalize(&dep), seen, order)?;
        }
        order.push(Module {
            name: name.to_string(),
            path: path.clone(),
        });
        Ok(())
    }
}

/// The `depends=` list of a module's `.modinfo` section.
fn depends(path: &Path) -> Result<Vec<String>> {
    let data = std::fs::read(path).io_context("reading", path)?;
    let elf_error = |e: object::Error| Error::Elf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = object::File::parse(&*data).map_err(elf_error)?;
    let Some(section) = file.section_by_name(".modinfo") else {
        return Ok(Vec::new());
    };
    let info = section.data().map_err(elf_error)?;
    Ok(modinfo_depends(info))
}

/// Parses the NUL-separated `key=value` records of `.modinfo`.
fn modinfo_depends(info: &[u8]) -> Vec<String> {
    info.split(|&b| b == 0)
        .filter_map(|rec| rec.strip_prefix(b"depends="))
        .flat_map(|deps| {
            String::from_utf8_lossy(deps)
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_depends_reads_the_list() {
        let info = b"license=GPL\0depends=virtio_ring,virtio,net_failover\0name=virtio_net\0";
        assert_eq!(
            modinfo_depends(info),
            ["virtio_ring", "virtio", "net_failover"]
        );
        assert!(modinfo_depends(b"depends=\0name=button\0").is_empty());
        assert!(modinfo_depends(b"").is_empty());
    }

    #[test]
    fn names_normalize_dashes() {
        assert_eq!(normalize("virtio-rng"), "virtio_rng");
    }
}
