//! The file's shape, as a user writes it (`guest.toml`), and how it
//! becomes a [`GuestDescription`]: paths resolved, defaults filled in,
//! inconsistencies refused.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::*;

/// The file's shape, as a user writes it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct GuestFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default)]
    pub boot: BootFile,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskFile>,
    pub login: LoginFile,
    #[serde(default)]
    pub ready: ReadyFile,
    #[serde(default)]
    pub cloud_init: CloudInitFile,
    #[serde(default)]
    pub machine: MachineFile,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ShareFile>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ShareFile {
    pub path: String,
    pub tag: String,
    #[serde(default)]
    pub readonly: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct BootFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct DiskFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DiskFormat>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct LoginFile {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ReadyKind {
    Console,
    #[default]
    Ssh,
    CloudInit,
    Agent,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ReadyFile {
    #[serde(default)]
    pub wait_for: ReadyKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct CloudInitFile {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_data: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct MachineFile {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_device: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub qemu_args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<bool>,
}

impl GuestFile {
    /// The description this file gives, its paths resolved against `dir`;
    /// an error says what is inconsistent.
    pub(super) fn resolve(
        self,
        dir: &Path,
        path: &Path,
    ) -> std::result::Result<GuestDescription, String> {
        let abs = |p: &str| dir.join(p);
        let arch: Arch = match &self.arch {
            Some(name) => name.parse().map_err(|e| format!("`arch`: {e}"))?,
            None => Arch::default(),
        };
        let boot = Boot {
            firmware: self.boot.firmware.unwrap_or_default(),
            kernel: match (self.boot.kernel, self.boot.initrd, self.boot.cmdline) {
                (Some(kernel), initrd, cmdline) => Some(KernelBoot {
                    kernel: abs(&kernel),
                    initrd: initrd.as_deref().map(abs),
                    cmdline: cmdline.unwrap_or_default(),
                }),
                (None, None, None) => None,
                (None, _, _) => {
                    return Err("`boot.initrd` and `boot.cmdline` need `boot.kernel`".into());
                }
            },
        };
        if boot.firmware == Firmware::UefiSecure && arch != Arch::X86_64 {
            return Err(format!(
                "`boot.firmware = \"uefi-secure\"` is for x86_64 guests (OVMF's Secure Boot \
                 build); an {arch} guest takes `uefi` (AAVMF) or direct kernel boot"
            ));
        }
        let mut disks = Vec::new();
        for (i, disk) in self.disks.into_iter().enumerate() {
            let source = match (disk.path, disk.url, disk.sha256) {
                (Some(p), None, None) => DiskSource::File(abs(&p)),
                (None, Some(url), Some(sha256)) => {
                    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(format!(
                            "`disks[{i}].sha256` must be 64 hex digits, not `{sha256}`"
                        ));
                    }
                    DiskSource::Url {
                        url,
                        sha256: sha256.to_ascii_lowercase(),
                    }
                }
                (None, Some(_), None) => {
                    return Err(format!("`disks[{i}]` gives a `url` without its `sha256`"));
                }
                _ => {
                    return Err(format!(
                        "`disks[{i}]` needs either `path` or `url` with `sha256`"
                    ));
                }
            };
            let named = match &source {
                DiskSource::File(p) => p.to_string_lossy().into_owned(),
                DiskSource::Url { url, .. } => url.clone(),
            };
            disks.push(Disk {
                format: disk
                    .format
                    .unwrap_or_else(|| DiskFormat::by_extension(&named)),
                source,
            });
        }
        if boot.kernel.is_none() && disks.is_empty() {
            return Err("nothing to boot: give `boot.kernel` or at least one `[[disks]]`".into());
        }
        if self.login.user.is_empty() {
            return Err("`login.user` is empty".into());
        }
        if self.login.password.is_none() && self.login.key.is_none() && !self.cloud_init.enabled {
            return Err(
                "no way to log in: give `login.password` or `login.key` (or enable cloud_init, \
                 which gives virtest's key)"
                    .into(),
            );
        }
        let timeout = self.login.timeout.unwrap_or(60.0);
        if !(timeout.is_finite() && timeout > 0.0) {
            return Err(format!(
                "`login.timeout` must be a positive number of seconds, not {timeout}"
            ));
        }
        let ready = match (self.ready.wait_for, self.ready.line) {
            (ReadyKind::Console, Some(line)) if !line.is_empty() => Ready::Console(line),
            (ReadyKind::Console, _) => {
                return Err("`ready.wait_for = \"console\"` needs the text in `ready.line`".into());
            }
            (ReadyKind::Ssh, None) => Ready::Ssh,
            (ReadyKind::Agent, None) => Ready::Agent,
            (ReadyKind::CloudInit, None) if self.cloud_init.enabled => Ready::CloudInit,
            (ReadyKind::CloudInit, None) => {
                return Err(
                    "`ready.wait_for = \"cloud-init\"` needs `cloud_init.enabled = true`".into(),
                );
            }
            (_, Some(_)) => {
                return Err("`ready.line` is only for `ready.wait_for = \"console\"`".into());
            }
        };
        let memory_mib = self.machine.memory.unwrap_or(256);
        let cpus = self.machine.cpus.unwrap_or(1);
        if memory_mib == 0 || cpus == 0 {
            return Err("`machine.memory` and `machine.cpus` must be at least 1".into());
        }
        let shares = self
            .shares
            .iter()
            .map(|s| super::share::resolve(dir, &s.path, &s.tag, s.readonly))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        super::share::check_unique(&shares)?;
        let name = self.name.unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "guest".into())
        });
        Ok(GuestDescription {
            name,
            kernel_release: self.kernel_release,
            arch,
            boot,
            disks,
            login: LoginSpec {
                user: self.login.user,
                password: self.login.password,
                key: self.login.key.as_deref().map(abs),
                host_key: self.login.host_key,
                port: self.login.port.unwrap_or(22),
                timeout: Duration::from_secs_f64(timeout),
            },
            ready,
            cloud_init: CloudInit {
                enabled: self.cloud_init.enabled,
                user_data: self.cloud_init.user_data.iter().map(|p| abs(p)).collect(),
            },
            machine: Machine {
                machine_type: self
                    .machine
                    .machine_type
                    .unwrap_or_else(|| arch.default_machine().into()),
                memory_mib,
                cpus,
                net_device: self
                    .machine
                    .net_device
                    .unwrap_or_else(|| "virtio-net-pci".into()),
                devices: self.machine.devices,
                qemu_args: self.machine.qemu_args,
                tpm: self.machine.tpm.unwrap_or(false),
            },
            shares,
            path: path.to_path_buf(),
        })
    }

    /// The file as TOML text.
    pub(crate) fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("guest descriptions serialize")
    }
}

/// A TOML error as `line N: message`.
pub(super) fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message.to_string(),
    }
}

/// The line where a dotted key (`login.pasword`, `disks.0.fmt`) is
/// written, found by following table headers; `None` when the key is
/// written in a form this simple reading does not follow.
pub(super) fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let parts: Vec<&str> = key
        .split('.')
        .filter(|p| p.parse::<usize>().is_err())
        .collect();
    let (leaf, table) = parts.split_last()?;
    let mut current: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            let name = header.split(']').next().unwrap_or("");
            current = name.split('.').map(|s| s.trim().to_string()).collect();
            continue;
        }
        let Some((written, _)) = line.split_once('=') else {
            continue;
        };
        let written: Vec<String> = written
            .split('.')
            .map(|s| s.trim().trim_matches('"').to_string())
            .collect();
        let full: Vec<&str> = current.iter().chain(&written).map(String::as_str).collect();
        if full.len() == parts.len() && full[..table.len()] == *table && full.last() == Some(leaf) {
            return Some(n + 1);
        }
    }
    None
}
