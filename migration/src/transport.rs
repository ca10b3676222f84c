//! Opening the destination's end of each transport and naming the
//! source's.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use qapi::qmp::{SocketAddress, migrate_incoming, query_migrate};
use serde_json::json;
use virtest_qmp::Qmp;

use crate::error::{Error, Result};
use crate::mode::MigrationMode;

/// A transport whose destination end listens: the source's URI, and the
/// files to remove afterwards.
#[derive(Debug)]
pub(crate) struct Transport {
    /// What the source's `migrate` is given.
    pub source_uri: String,
    /// Whether the destination stays up when the incoming migration
    /// fails (`exit-on-error` off, QEMU 9.1 on), to be asked why.
    pub destination_stays_up: bool,
    /// Sockets and FIFOs made for this migration.
    files: Vec<PathBuf>,
}

impl Drop for Transport {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

impl Transport {
    /// Starts the destination's incoming side over `mode`; `dir` is the
    /// VM's private directory and `tag` makes names unique within it.
    pub(crate) async fn open(
        mode: MigrationMode,
        dir: &Path,
        tag: u32,
        source: &Qmp,
        destination: &Qmp,
    ) -> Result<Transport> {
        let incoming = async |uri: &str| incoming(destination, uri).await;
        match mode {
            MigrationMode::Tcp => {
                // QEMU binds a port of its choosing and says which: no
                // other process can take it between choosing and binding.
                let stays_up = incoming("tcp:127.0.0.1:0").await?;
                let info = destination
                    .execute(query_migrate {})
                    .await
                    .map_err(|source| Error::Qmp {
                        side: "destination",
                        step: "`query-migrate` (which port it listens on)".into(),
                        source,
                    })?;
                let port = info
                    .socket_address
                    .unwrap_or_default()
                    .into_iter()
                    .find_map(|address| match address {
                        SocketAddress::inet(inet) => inet.base.port.parse::<u16>().ok(),
                        _ => None,
                    })
                    .ok_or_else(|| Error::Transport {
                        mode: "tcp",
                        source: std::io::Error::other(
                            "the destination listens for the migration but names no TCP port",
                        ),
                    })?;
                Ok(Transport {
                    source_uri: format!("tcp:127.0.0.1:{port}"),
                    destination_stays_up: stays_up,
                    files: vec![],
                })
            }
            MigrationMode::Unix => {
                let socket = dir.join(format!("migration-{tag}.sock"));
                let _ = std::fs::remove_file(&socket);
                let uri = format!("unix:{}", socket.display());
                let destination_stays_up = incoming(&uri).await?;
                Ok(Transport {
                    source_uri: uri,
                    destination_stays_up,
                    files: vec![socket],
                })
            }
            MigrationMode::Exec => {
                let fifo = dir.join(format!("migration-{tag}.fifo"));
                let _ = std::fs::remove_file(&fifo);
                make_fifo(&fifo).map_err(|source| Error::Transport {
                    mode: "exec",
                    source,
                })?;
                let quoted = shell_words::quote(&fifo.to_string_lossy()).into_owned();
                let mut transport = Transport {
                    source_uri: format!("exec:cat > {quoted}"),
                    destination_stays_up: false,
                    files: vec![fifo],
                };
                transport.destination_stays_up = incoming(&format!("exec:cat {quoted}")).await?;
                Ok(transport)
            }
            MigrationMode::Fd => {
                let (out, into) = std::os::unix::net::UnixStream::pair()
                    .map_err(|source| Error::Transport { mode: "fd", source })?;
                let name = format!("virtest-migration-{tag}");
                let getfd = async |qmp: &Qmp, side, fd: std::os::fd::BorrowedFd<'_>| {
                    qmp.execute_with_fd("getfd", json!({ "fdname": name }), fd)
                        .await
                        .map_err(|source| Error::Qmp {
                            side,
                            step: "passing the migration socket (`getfd`)".into(),
                            source,
                        })
                };
                getfd(destination, "destination", into.as_fd()).await?;
                getfd(source, "source", out.as_fd()).await?;
                // QEMU holds its own copies now; ours close here.
                let destination_stays_up = incoming(&format!("fd:{name}")).await?;
                Ok(Transport {
                    source_uri: format!("fd:{name}"),
                    destination_stays_up,
                    files: vec![],
                })
            }
        }
    }
}

/// `migrate-incoming` on `uri`, with `exit-on-error` off where the
/// destination QEMU takes it (9.1 on: a QEMU that does not know the
/// argument says so, and is asked again without it). Returns whether it
/// was taken: the destination then stays up after a failed migration,
/// and `query-migrate` gives its reason.
async fn incoming(destination: &Qmp, uri: &str) -> Result<bool> {
    let command = |exit_on_error| migrate_incoming {
        uri: Some(uri.into()),
        channels: None,
        exit_on_error,
    };
    let failed = |source| Error::Qmp {
        side: "destination",
        step: format!("`migrate-incoming` on `{uri}`"),
        source,
    };
    match destination.execute(command(Some(false))).await {
        Ok(_) => Ok(true),
        Err(virtest_qmp::Error::Command { ref desc, .. }) if desc.contains("exit-on-error") => {
            destination
                .execute(command(None))
                .await
                .map_err(failed)
                .map(|_| false)
        }
        Err(e) => Err(failed(e)),
    }
}

fn make_fifo(path: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    Ok(mknodat(
        CWD,
        path,
        FileType::Fifo,
        Mode::RUSR | Mode::WUSR,
        0,
    )?)
}
