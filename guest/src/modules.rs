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

/// Picks, from a stream of module files seen once (a kernel package being
/// unpacked), the modules `wanted` needs, without writing the thousands it
/// does not.
///
/// A module is kept when its name is already known to be needed; keeping
/// it makes its dependencies needed. A dependency that went by before it
/// was known to be needed is reported by [`Selector::missed`], for a second
/// pass.
#[derive(Debug)]
pub struct Selector {
    wanted: Vec<String>,
    depends: HashMap<String, Vec<String>>,
    needed: Vec<String>,
    kept: Vec<String>,
}

impl Selector {
    /// A selector for `wanted` and everything they depend on.
    pub fn new(wanted: &[&str]) -> Selector {
        let wanted: Vec<String> = wanted.iter().map(|w| normalize(w)).collect();
        Selector {
            needed: wanted.clone(),
            wanted,
            depends: HashMap::new(),
            kept: Vec::new(),
        }
    }

    /// A selector that already knows the package's dependencies (from
    /// [`Selector::index`] of an earlier pass), so it needs no second pass.
    pub fn with_index(wanted: &[&str], index: HashMap<String, Vec<String>>) -> Selector {
        let mut selector = Selector::new(wanted);
        selector.depends = index;
        selector.needed = selector.closure();
        selector
    }

    /// Every module seen so far with its dependencies: what depmod would
    /// have written, worth keeping for the next pass over the same package.
    pub fn index(&self) -> &HashMap<String, Vec<String>> {
        &self.depends
    }

    /// The module name of a `.ko` path, if it is one.
    pub fn module_name(path: &Path) -> Option<String> {
        Some(normalize(path.file_name()?.to_str()?.strip_suffix(".ko")?))
    }

    /// Looks at one module file; returns whether to keep it.
    pub fn offer(&mut self, path: &Path, bytes: &[u8]) -> Result<bool> {
        let Some(name) = Selector::module_name(path) else {
            return Ok(false);
        };
        let deps = depends_of(path, bytes)?
            .iter()
            .map(|d| normalize(d))
            .collect();
        Ok(self.offer_parsed(name, deps))
    }

    fn offer_parsed(&mut self, name: String, deps: Vec<String>) -> bool {
        let keep = self.needed.contains(&name);
        if keep {
            for dep in &deps {
                if !self.needed.contains(dep) {
                    self.needed.push(dep.clone());
                }
            }
            self.kept.push(name.clone());
        }
        self.depends.insert(name, deps);
        keep
    }

    /// Modules the wanted ones need, seen in the stream but not kept.
    pub fn missed(&self) -> Vec<String> {
        self.closure()
            .into_iter()
            .filter(|n| self.depends.contains_key(n) && !self.kept.contains(n))
            .collect()
    }

    /// The wanted modules and all they depend on, as far as known.
    fn closure(&self) -> Vec<String> {
        let mut closure: Vec<String> = Vec::new();
        let mut stack = self.wanted.clone();
        while let Some(name) = stack.pop() {
            if closure.contains(&name) {
                continue;
            }
            if let Some(deps) = self.depends.get(&name) {
                stack.extend(deps.iter().cloned());
            }
            closure.push(name);
        }
        closure
    }
}

/// The `depends=` list of a module file.
fn depends(path: &Path) -> Result<Vec<String>> {
    let data = std::fs::read(path).io_context("reading", path)?;
    depends_of(path, &data)
}

/// The `depends=` list of a module's `.modinfo` section.
fn depends_of(path: &Path, data: &[u8]) -> Result<Vec<String>> {
    let elf_error = |e: object::Error| Error::Elf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = object::File::parse(data).map_err(elf_error)?;
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
    fn selector_keeps_the_closure_and_reports_what_went_by_early() {
        let mut s = Selector::new(&["virtio_net", "virtio-rng"]);
        let deps = |d: &[&str]| d.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // virtio_ring goes by before anything needing it was seen.
        assert!(!s.offer_parsed("virtio_ring".into(), deps(&[])));
        assert!(!s.offer_parsed("e1000".into(), deps(&[])));
        assert!(s.offer_parsed(
            "virtio_net".into(),
            deps(&["virtio_ring", "virtio", "net_failover"])
        ));
        assert!(s.offer_parsed("virtio".into(), deps(&[])));
        assert!(s.offer_parsed("net_failover".into(), deps(&["failover"])));
        assert!(s.offer_parsed("failover".into(), deps(&[])));
        assert!(s.offer_parsed("virtio_rng".into(), deps(&["virtio", "virtio_ring"])));
        assert_eq!(s.missed(), ["virtio_ring"]);

        // With the index of that pass, the next one keeps all in one go.
        let mut again = Selector::with_index(&["virtio_net", "virtio-rng"], s.index().clone());
        assert!(again.offer_parsed("virtio_ring".into(), deps(&[])));
        assert!(!again.offer_parsed("e1000".into(), deps(&[])));
        assert_eq!(
            Selector::module_name(Path::new("a/b/virtio-rng.ko")).as_deref(),
            Some("virtio_rng")
        );
        assert_eq!(Selector::module_name(Path::new("a/modules.builtin")), None);
    }

    #[test]
    fn names_normalize_dashes() {
        assert_eq!(normalize("virtio-rng"), "virtio_rng");
    }
}
