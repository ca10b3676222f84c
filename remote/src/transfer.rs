//! Files to and from the guest, modes kept, over the session's exec
//! channel: `cat` for a file and `tar` for a tree, which every guest with
//! a busybox has (the default guest has no sftp server).
//!
//! Transfers stream: a file goes between disk and channel in 256 KiB
//! pieces, and a tree's archive is made or unpacked on a blocking thread
//! at the other end of a pipe, so neither is ever held whole in memory
//! and no disk access runs on an async worker. A file received arrives
//! under a temporary name beside its destination and takes the
//! destination's name only once whole.

use std::io::PipeWriter;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::unix::pipe;

use crate::error::{Error, Result};
use crate::ssh::{RunOptions, SshSession, Streams};

impl SshSession {
    /// Copies a local file to `remote`, keeping its mode.
    pub async fn send_file(&self, local: &Path, remote: &str) -> Result<()> {
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| local_error(local, e))?;
        let mode = file
            .metadata()
            .await
            .map_err(|e| local_error(local, e))?
            .permissions()
            .mode()
            & 0o7777;
        let remote = shell_words::quote(remote);
        let command = format!("cat > {remote} && chmod {mode:o} {remote}");
        let streams = Streams {
            stdin: Some((&mut file, local)),
            ..Streams::default()
        };
        self.exec(&command, streams, &RunOptions::default())
            .await?
            .checked(&command)
            .map(drop)
    }

    /// Copies `remote` to a local file, keeping its mode. Until the copy
    /// is whole, `local` is left as it was.
    pub async fn receive_file(&self, remote: &str, local: &Path) -> Result<()> {
        let quoted = shell_words::quote(remote);
        let stat = format!("stat -c %a {quoted}");
        let mode_text = self
            .exec(&stat, Streams::default(), &RunOptions::default())
            .await?
            .checked(&stat)?;
        let mode =
            u32::from_str_radix(String::from_utf8_lossy(&mode_text).trim(), 8).map_err(|e| {
                Error::Channel {
                    command: stat.clone(),
                    reason: format!("its output is not a mode: {e}"),
                }
            })?;
        let (partial, mut file) = Partial::create(local).await?;
        let cat = format!("cat {quoted}");
        let streams = Streams {
            stdout: Some((&mut file, local)),
            ..Streams::default()
        };
        self.exec(&cat, streams, &RunOptions::default())
            .await?
            .checked(&cat)?;
        file.sync_all().await.map_err(|e| local_error(local, e))?;
        drop(file);
        partial.finish(mode).await
    }

    /// Copies a local directory tree into `remote` (created if needed),
    /// keeping modes.
    pub async fn send_tree(&self, local: &Path, remote: &str) -> Result<()> {
        let (reader, writer) = std::io::pipe().map_err(|e| local_error(local, e))?;
        let root = local.to_path_buf();
        let archiver = tokio::task::spawn_blocking(move || archive(&root, writer));
        let mut reader =
            pipe::Receiver::from_owned_fd(reader.into()).map_err(|e| local_error(local, e))?;
        let remote = shell_words::quote(remote);
        let command = format!("mkdir -p {remote} && tar -x -C {remote}");
        let streams = Streams {
            stdin: Some((&mut reader, local)),
            ..Streams::default()
        };
        let sent = self.exec(&command, streams, &RunOptions::default()).await;
        // The archiver stops at once if the guest stopped reading.
        drop(reader);
        let archived = archiver.await.expect("the archiver does not panic");
        match archived {
            // The guest stopped reading: its side says why, if it can.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                sent?.checked(&command)?;
                Err(local_error(local, e))
            }
            // The tree's own trouble (a file that cannot be read).
            Err(e) => Err(local_error(local, e)),
            Ok(()) => sent?.checked(&command).map(drop),
        }
    }

    /// Copies the tree at `remote` into a local directory (created if
    /// needed), keeping modes.
    pub async fn receive_tree(&self, remote: &str, local: &Path) -> Result<()> {
        tokio::fs::create_dir_all(local)
            .await
            .map_err(|e| local_error(local, e))?;
        let (reader, writer) = std::io::pipe().map_err(|e| local_error(local, e))?;
        let root = local.to_path_buf();
        let unpacker = tokio::task::spawn_blocking(move || unpack(reader, &root));
        let mut writer =
            pipe::Sender::from_owned_fd(writer.into()).map_err(|e| local_error(local, e))?;
        let command = format!("tar -c -C {} .", shell_words::quote(remote));
        let streams = Streams {
            stdout: Some((&mut writer, local)),
            ..Streams::default()
        };
        let received = self.exec(&command, streams, &RunOptions::default()).await;
        // End of the archive: the unpacker finishes.
        drop(writer);
        let unpacked = unpacker.await.expect("the unpacker does not panic");
        match (received, unpacked) {
            // The copy into the unpacker broke because it stopped: it
            // says why.
            (Err(Error::Local { .. }), Err(e)) => Err(local_error(local, e)),
            (Err(e), _) => Err(e),
            (Ok(output), unpacked) => {
                output.checked(&command)?;
                unpacked.map_err(|e| local_error(local, e))
            }
        }
    }
}

/// Writes the tar archive of the tree at `root` into `out`.
fn archive(root: &Path, out: PipeWriter) -> std::io::Result<()> {
    let mut archive = tar::Builder::new(std::io::BufWriter::with_capacity(64 << 10, out));
    archive.follow_symlinks(false);
    archive.append_dir_all(".", root)?;
    archive
        .into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?;
    Ok(())
}

/// Unpacks the tar archive read from `from` into `root`, modes kept.
fn unpack(from: std::io::PipeReader, root: &Path) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(64 << 10, from));
    archive.set_preserve_permissions(true);
    archive.unpack(root)
}

/// A file being received: written under a temporary name beside its
/// destination, renamed over it once whole, removed if dropped before.
struct Partial {
    path: PathBuf,
    destination: PathBuf,
}

impl Partial {
    /// The partial file of `destination`, and the file to write.
    async fn create(destination: &Path) -> Result<(Partial, tokio::fs::File)> {
        let name = destination
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let path = destination.with_file_name(format!(".{name}.virtest-partial"));
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| local_error(destination, e))?;
        let partial = Partial {
            path,
            destination: destination.to_path_buf(),
        };
        Ok((partial, file))
    }

    /// Gives the whole file `mode` and its destination's name.
    async fn finish(self, mode: u32) -> Result<()> {
        let permissions = std::fs::Permissions::from_mode(mode);
        tokio::fs::set_permissions(&self.path, permissions)
            .await
            .map_err(|e| local_error(&self.destination, e))?;
        tokio::fs::rename(&self.path, &self.destination)
            .await
            .map_err(|e| local_error(&self.destination, e))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        // Gone already once renamed.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn local_error(path: &Path, e: std::io::Error) -> Error {
    Error::Local {
        path: path.to_path_buf(),
        source: e,
    }
}
