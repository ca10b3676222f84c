//! NoCloud seeds for cloud-init guests: a small FAT volume labelled
//! `cidata` holding `meta-data` (a fresh instance id and hostname, so
//! every VM is a new instance) and `user-data` (the login key, the
//! password when one is set, the ready line, and the user's own
//! cloud-config snippets, merged as a multipart message).

use std::path::PathBuf;

use crate::description::CLOUD_INIT_READY_LINE;
use crate::error::{Error, IoContext, Result};

/// The size of a seed volume: plenty for a few cloud-config files.
#[cfg(feature = "provision")]
const SEED_SIZE: usize = 2 << 20;

/// How cloud-init merges our part and the user's: lists appended,
/// dictionaries merged, nothing of ours replaced.
const MERGE_TYPE: &str = "list(append)+dict(recurse_array,no_replace)+str()";

/// What a seed gives one VM.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed {
    /// The instance id (a new one per VM: cloud-init runs its
    /// per-instance steps, host keys among them).
    pub instance_id: String,
    /// The guest's hostname.
    pub hostname: String,
    /// The user logins are made as (`root`, or one the seed creates).
    pub user: String,
    /// Public keys (OpenSSH lines) authorized for `user`.
    pub authorized_keys: Vec<String>,
    /// A password for `user`, when logins may use one.
    pub password: Option<String>,
    /// The user's own cloud-config files, merged after ours.
    pub user_data: Vec<PathBuf>,
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed")
            .field("instance_id", &self.instance_id)
            .field("hostname", &self.hostname)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("user_data", &self.user_data)
            .finish()
    }
}

impl Seed {
    /// The `meta-data` file.
    pub fn meta_data(&self) -> String {
        format!(
            "instance-id: {}\nlocal-hostname: {}\n",
            self.instance_id, self.hostname
        )
    }

    /// Our cloud-config: the user with the keys and password, and the
    /// ready line on the serial console from a per-boot script, which
    /// cloud-init's final stage runs on every boot: the guest has then
    /// finished booting. (Readiness at the end of the init stage came
    /// while systemd was still starting most units, and under TCG a
    /// migration at that moment panicked the Debian guest's kernel.)
    pub fn cloud_config(&self) -> String {
        let quoted = |s: &str| serde_json::to_string(s).expect("strings serialize");
        let keys: Vec<String> = self.authorized_keys.iter().map(|k| quoted(k)).collect();
        let keys = format!("[{}]", keys.join(", "));
        let mut text = String::from("#cloud-config\n");
        if self.user == "root" {
            text.push_str("disable_root: false\n");
            text.push_str(&format!("ssh_authorized_keys: {keys}\n"));
        } else {
            text.push_str(&format!(
                "users:\n  - default\n  - name: {}\n    shell: /bin/bash\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    lock_passwd: false\n    ssh_authorized_keys: {keys}\n",
                quoted(&self.user)
            ));
        }
        if let Some(password) = &self.password {
            text.push_str(&format!(
                "ssh_pwauth: true\nchpasswd:\n  expire: false\n  users:\n    - name: {}\n      password: {}\n      type: text\n",
                quoted(&self.user),
                quoted(password)
            ));
        }
        text.push_str(&format!(
            "write_files:\n  - path: /var/lib/cloud/scripts/per-boot/zz-virtest-ready\n    permissions: \"0755\"\n    content: |\n      #!/bin/sh\n      echo \"{CLOUD_INIT_READY_LINE} $(cut -d' ' -f1 /proc/uptime)\" > /dev/ttyS0\n"
        ));
        if self.password.is_some() && self.user == "root" {
            // Debian's sshd refuses root passwords unless told.
            text.push_str(
                "  - path: /etc/ssh/sshd_config.d/50-virtest.conf\n    content: \"PermitRootLogin yes\\n\"\n",
            );
        }
        text
    }

    /// The `user-data` file: our cloud-config alone, or a multipart
    /// message with the user's snippets after it.
    pub fn user_data(&self) -> Result<String> {
        let ours = self.cloud_config();
        if self.user_data.is_empty() {
            return Ok(ours);
        }
        let boundary = "==virtest-user-data==";
        let mut text = format!(
            "Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n"
        );
        let mut part = |body: &str| {
            text.push_str(&format!(
                "--{boundary}\nContent-Type: text/cloud-config; charset=\"utf-8\"\nMIME-Version: 1.0\nMerge-Type: {MERGE_TYPE}\n\n{}\n",
                body.trim_end()
            ));
        };
        part(&ours);
        for path in &self.user_data {
            let body = std::fs::read_to_string(path).io_context("reading user-data", path)?;
            if !body.trim_start().starts_with("#cloud-config") {
                return Err(Error::Description {
                    path: path.clone(),
                    reason: "a user-data snippet must be cloud-config (start with `#cloud-config`)"
                        .into(),
                });
            }
            part(&body);
        }
        text.push_str(&format!("--{boundary}--\n"));
        Ok(text)
    }

    /// Writes the seed volume to `path` (mode 0600: it may hold a
    /// password).
    #[cfg(feature = "provision")]
    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        let meta = self.meta_data();
        let user = self.user_data()?;
        let image = crate::fat::volume(
            SEED_SIZE,
            "cidata",
            &[
                ("meta-data", meta.as_bytes()),
                ("user-data", user.as_bytes()),
            ],
        )
        .io_context("formatting the seed", path)?;
        crate::keys::write_private(path, &image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Seed {
        Seed {
            instance_id: "virtest-abc123".into(),
            hostname: "virtest-abc123".into(),
            user: "root".into(),
            authorized_keys: vec!["ssh-ed25519 AAAA test".into()],
            password: Some("pa\"ss".into()),
            user_data: Vec::new(),
        }
    }

    #[test]
    fn root_gets_the_key_the_password_and_the_ready_line() {
        let text = seed().cloud_config();
        assert!(text.starts_with("#cloud-config\n"));
        assert!(text.contains("disable_root: false"));
        assert!(text.contains("ssh_authorized_keys: [\"ssh-ed25519 AAAA test\"]"));
        assert!(text.contains("password: \"pa\\\"ss\""), "{text}");
        assert!(text.contains("PermitRootLogin yes"));
        assert!(text.contains(CLOUD_INIT_READY_LINE));
        assert!(!format!("{:?}", seed()).contains("pa\\\"ss"));
    }

    #[test]
    fn another_user_is_created_with_the_key() {
        let mut seed = seed();
        seed.user = "tester".into();
        seed.password = None;
        let text = seed.cloud_config();
        assert!(text.contains("name: \"tester\""));
        assert!(!text.contains("chpasswd"));
        assert!(!text.contains("PermitRootLogin"));
    }

    #[test]
    fn snippets_become_parts_of_a_multipart_message() {
        let dir = tempfile::tempdir().unwrap();
        let snippet = dir.path().join("extra.yaml");
        std::fs::write(&snippet, "#cloud-config\nruncmd:\n  - touch /extra\n").unwrap();
        let mut seed = seed();
        seed.user_data = vec![snippet.clone()];
        let text = seed.user_data().unwrap();
        assert!(text.starts_with("Content-Type: multipart/mixed"));
        assert_eq!(text.matches("Merge-Type: ").count(), 2);
        assert!(text.contains("touch /extra"));
        assert!(text.trim_end().ends_with("--==virtest-user-data==--"));

        std::fs::write(&snippet, "runcmd: []\n").unwrap();
        let error = seed.user_data().unwrap_err().to_string();
        assert!(
            error.contains("extra.yaml") && error.contains("#cloud-config"),
            "{error}"
        );
    }

    #[cfg(feature = "provision")]
    #[test]
    fn the_volume_holds_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.img");
        seed().write(&path).unwrap();
        let image = std::fs::read(&path).unwrap();
        let fs =
            fatfs::FileSystem::new(std::io::Cursor::new(image), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label(), "CIDATA");
        let names: Vec<String> = fs
            .root_dir()
            .iter()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(names.contains(&"meta-data".into()) && names.contains(&"user-data".into()));
    }
}
