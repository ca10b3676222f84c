//! Files to and from the guest, modes kept, over the session's exec
//! channel: `cat` for a file and `tar` for a tree, which every guest with
//! a busybox has (the default guest has no sftp server).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::ssh::{RunOptions, SshSession};

impl SshSession {
    /// Copies a local file to `remote`, keeping its mode.
    pub async fn send_file(&self, local: &Path, remote: &str) -> Result<()> {
        let data = read_local(local)?;
        let mode = std::fs::metadata(local)
            .map_err(|e| local_error(local, e))?
            .permissions()
            .mode()
            & 0o7777;
        let remote = quote(remote);
        let command = format!("cat > {remote} && chmod {mode:o} {remote}");
        self.exec(&command, Some(&data), &RunOptions::default(), None)
            .await?
            .checked(&command)
            .map(drop)
    }

    /// Copies `remote` to a local file, keeping its mode.
    pub async fn receive_file(&self, remote: &str, local: &Path) -> Result<()> {
        let quoted = quote(remote);
        let stat = format!("stat -c %a {quoted}");
        let mode_text = self
            .exec(&stat, None, &RunOptions::default(), None)
            .await?
            .checked(&stat)?;
        let mode =
            u32::from_str_radix(String::from_utf8_lossy(&mode_text).trim(), 8).map_err(|e| {
                Error::Channel {
                    command: stat.clone(),
                    reason: format!("its output is not a mode: {e}"),
                }
            })?;
        let cat = format!("cat {quoted}");
        let data = self
            .exec(&cat, None, &RunOptions::default(), None)
            .await?
            .checked(&cat)?;
        std::fs::write(local, data).map_err(|e| local_error(local, e))?;
        std::fs::set_permissions(local, std::fs::Permissions::from_mode(mode))
            .map_err(|e| local_error(local, e))
    }

    /// Copies a local directory tree into `remote` (created if needed),
    /// keeping modes.
    pub async fn send_tree(&self, local: &Path, remote: &str) -> Result<()> {
        let mut archive = tar::Builder::new(Vec::new());
        archive.follow_symlinks(false);
        archive
            .append_dir_all(".", local)
            .map_err(|e| local_error(local, e))?;
        let data = archive.into_inner().map_err(|e| local_error(local, e))?;
        let remote = quote(remote);
        let command = format!("mkdir -p {remote} && tar -x -C {remote}");
        self.exec(&command, Some(&data), &RunOptions::default(), None)
            .await?
            .checked(&command)
            .map(drop)
    }

    /// Copies the tree at `remote` into a local directory (created if
    /// needed), keeping modes.
    pub async fn receive_tree(&self, remote: &str, local: &Path) -> Result<()> {
        let command = format!("tar -c -C {} .", quote(remote));
        let data = self
            .exec(&command, None, &RunOptions::default(), None)
            .await?
            .checked(&command)?;
        std::fs::create_dir_all(local).map_err(|e| local_error(local, e))?;
        let mut archive = tar::Archive::new(&data[..]);
        archive.set_preserve_permissions(true);
        archive.unpack(local).map_err(|e| local_error(local, e))
    }
}

fn read_local(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| local_error(path, e))
}

fn local_error(path: &Path, e: std::io::Error) -> Error {
    Error::Local {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Quotes a path for the guest's shell.
fn quote(path: &str) -> String {
    format!("'{}'", path.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(super::quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(super::quote("it's"), "'it'\\''s'");
    }
}
