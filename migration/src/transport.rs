//! Opening the destination's end of each transport and naming the
//! source's: for the migration (`migrate-incoming`), and again for a
//! paused postcopy's recovery (`migrate-recover`).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use qapi::qmp::{SocketAddress, migrate_incoming, migrate_recover, query_migrate};
use serde_json::json;
use virtest_host::Host;
use virtest_qmp::Qmp;

use crate::error::{Error, Result};
use crate::mode::MigrationMode;

/// A transport whose destination end listens: the source's URI, and the
/// files to remove afterwards.
#[derive(Debug)]
pub(crate) struct Transport {
    mode: MigrationMode,
    /// The VM's private directory, where sockets and FIFOs go.
    dir: PathBuf,
    /// Makes names unique within `dir`.
    tag: u32,
    /// The address the destination listens on over tcp.
    listen: String,
    /// What the source's `migrate` is given.
    pub source_uri: String,
    /// Whether the destination stays up when the incoming migration
    /// fails (`exit-on-error` off, QEMU 9.1 on), to be asked why.
    pub destination_stays_up: bool,
    /// The destination's `migrate-incoming` URI when it must wait for the
    /// source to finish (`file:`).
    deferred: Option<String>,
    /// The destination's and the source's URIs of a channel readied for
    /// recovering a paused postcopy.
    recovery: Option<(String, String)>,
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
        listen: &str,
        tag: u32,
        source: &Qmp,
        destination: &Qmp,
    ) -> Result<Transport> {
        let mut transport = Transport {
            mode,
            dir: dir.to_path_buf(),
            tag,
            listen: listen.to_string(),
            source_uri: String::new(),
            destination_stays_up: false,
            recovery: None,
            deferred: None,
            files: Vec::new(),
        };
        transport.source_uri = transport.listen(source, destination).await?;
        Ok(transport)
    }

    /// Readies a second channel, for recovering a paused postcopy later:
    /// everything that needs the destination's main loop happens now
    /// (passing an fd is an in-band command), since once postcopy is
    /// paused that loop may wait for a page that does not come. Over
    /// tcp the kernel picks a free port, which is released for QEMU to
    /// bind at recovery.
    pub(crate) async fn prepare_recovery(&mut self, source: &Qmp, destination: &Qmp) -> Result<()> {
        let tag = self.tag;
        let uris = match self.mode {
            MigrationMode::Tcp => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|listener| listener.local_addr())
                    .map_err(|source| Error::Transport {
                        mode: "tcp",
                        source,
                    })?
                    .port();
                let uri = format!("tcp:{}:{port}", self.listen);
                (uri.clone(), uri)
            }
            MigrationMode::Unix => {
                let socket = self.dir.join(format!("migration-{tag}-recover.sock"));
                let _ = std::fs::remove_file(&socket);
                self.files.push(socket.clone());
                let uri = format!("unix:{}", socket.display());
                (uri.clone(), uri)
            }
            MigrationMode::Fd => {
                let name = format!("virtest-migration-{tag}-recover");
                pass_socket_pair(&name, source, destination).await?;
                (format!("fd:{name}"), format!("fd:{name}"))
            }
            MigrationMode::Exec | MigrationMode::File => {
                return Err(Error::Spec(format!(
                    "a paused postcopy cannot be recovered over {}: it has no postcopy",
                    self.mode
                )));
            }
        };
        self.recovery = Some(uris);
        Ok(())
    }

    /// Recovers a paused postcopy migration over the channel
    /// [`Transport::prepare_recovery`] readied: the destination listens
    /// on it (`migrate-recover`, out of band); returns the source's URI,
    /// for `migrate` with `resume`.
    pub(crate) async fn recover(&mut self, destination: &Qmp) -> Result<String> {
        let (destination_uri, source_uri) = self
            .recovery
            .take()
            .ok_or_else(|| Error::Spec("no channel was readied for recovering postcopy".into()))?;
        // Out of band: the destination's main loop may be waiting for a
        // page the paused migration has not sent.
        let command = migrate_recover {
            uri: destination_uri.clone(),
        };
        destination
            .execute_oob_within(command, RECOVER_ANSWER)
            .await
            .map_err(|source| Error::Qmp {
                side: "destination",
                step: format!("`migrate-recover` on `{destination_uri}`"),
                source,
            })?;
        Ok(source_uri)
    }

    /// Makes the destination listen over the transport; returns the
    /// source's URI.
    async fn listen(&mut self, source: &Qmp, destination: &Qmp) -> Result<String> {
        let tag = self.tag;
        match self.mode {
            MigrationMode::Tcp => {
                // QEMU binds a port of its choosing and says which: no
                // other process can take it between choosing and binding.
                let listen = self.listen.clone();
                self.incoming(destination, &format!("tcp:{listen}:0"))
                    .await?;
                let port = listening_port(destination).await?;
                Ok(format!("tcp:{listen}:{port}"))
            }
            MigrationMode::Unix => {
                let socket = self.dir.join(format!("migration-{tag}.sock"));
                let _ = std::fs::remove_file(&socket);
                let uri = format!("unix:{}", socket.display());
                self.files.push(socket);
                self.incoming(destination, &uri).await?;
                Ok(uri)
            }
            MigrationMode::Exec => {
                let fifo = self.dir.join(format!("migration-{tag}.fifo"));
                let _ = std::fs::remove_file(&fifo);
                make_fifo(&fifo).map_err(|source| Error::Transport {
                    mode: "exec",
                    source,
                })?;
                let quoted = shell_words::quote(&fifo.to_string_lossy()).into_owned();
                self.files.push(fifo);
                self.incoming(destination, &format!("exec:cat {quoted}"))
                    .await?;
                Ok(format!("exec:cat > {quoted}"))
            }
            MigrationMode::Fd => {
                let name = format!("virtest-migration-{tag}");
                pass_socket_pair(&name, source, destination).await?;
                self.incoming(destination, &format!("fd:{name}")).await?;
                Ok(format!("fd:{name}"))
            }
            MigrationMode::File => {
                // The destination reads it once it is whole.
                let file = self.dir.join(format!("migration-{tag}.state"));
                let _ = std::fs::remove_file(&file);
                let uri = format!("file:{}", file.display());
                self.files.push(file);
                self.deferred = Some(uri.clone());
                Ok(uri)
            }
        }
    }

    /// Whether the destination reads only once the source has finished.
    pub(crate) fn is_deferred(&self) -> bool {
        self.deferred.is_some()
    }

    /// Starts the destination reading what the source has finished
    /// writing (`file:`).
    pub(crate) async fn start_deferred(&mut self, destination: &Qmp) -> Result<()> {
        match self.deferred.take() {
            Some(uri) => self.incoming(destination, &uri).await,
            None => Ok(()),
        }
    }

    /// `migrate-incoming` on `uri`, with `exit-on-error` off where the
    /// destination QEMU takes it (9.1 on: a QEMU that does not know the
    /// argument says so, and is asked again without it). Where it was
    /// taken, the destination stays up after a failed migration, and
    /// `query-migrate` gives its reason.
    async fn incoming(&mut self, destination: &Qmp, uri: &str) -> Result<()> {
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
        self.destination_stays_up = match destination.execute(command(Some(false))).await {
            Ok(_) => true,
            Err(virtest_qmp::Error::Command { ref desc, .. }) if desc.contains("exit-on-error") => {
                destination.execute(command(None)).await.map_err(failed)?;
                false
            }
            Err(e) => return Err(failed(e)),
        };
        Ok(())
    }
}

/// A socket pair, one end passed to each QEMU under `name` (`getfd`).
async fn pass_socket_pair(name: &str, source: &Qmp, destination: &Qmp) -> Result<()> {
    let (out, into) = std::os::unix::net::UnixStream::pair()
        .map_err(|source| Error::Transport { mode: "fd", source })?;
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
    Ok(())
}

/// How long the destination has to answer `migrate-recover`.
const RECOVER_ANSWER: std::time::Duration = std::time::Duration::from_secs(10);

/// The TCP port the destination listens on, as it says (the last it
/// names: a recovery's listener comes after the first one's).
async fn listening_port(destination: &Qmp) -> Result<u16> {
    let info = destination
        .execute(query_migrate {})
        .await
        .map_err(|source| Error::Qmp {
            side: "destination",
            step: "`query-migrate` (which port it listens on)".into(),
            source,
        })?;
    info.socket_address
        .unwrap_or_default()
        .into_iter()
        .filter_map(|address| match address {
            SocketAddress::inet(inet) => inet.base.port.parse::<u16>().ok(),
            _ => None,
        })
        .next_back()
        .ok_or_else(|| Error::Transport {
            mode: "tcp",
            source: std::io::Error::other(
                "the destination listens for the migration but names no TCP port",
            ),
        })
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

/// The address the destination listens on over tcp: 127.0.0.1 on one
/// host, else the one other hosts reach the destination at. Between
/// hosts only tcp carries a migration, and on another host than this
/// machine neither fd (a socket passed over QMP, which SSH does not
/// carry) nor exec and file (made and read here).
pub(crate) fn listen_address(from: &Host, to: &Host, mode: MigrationMode) -> Result<String> {
    let remote = !from.is_local() || !to.is_local();
    if !from.same(to) && mode != MigrationMode::Tcp {
        return Err(Error::Spec(format!(
            "between hosts (`{}` to `{}`) only tcp carries a migration, not {mode}: \
             {mode} needs both QEMUs on one host",
            from.name(),
            to.name()
        )));
    }
    if remote && !matches!(mode, MigrationMode::Tcp | MigrationMode::Unix) {
        return Err(Error::Spec(format!(
            "a migration on host `{}` goes over tcp or unix, not {mode}: {}",
            to.name(),
            match mode {
                MigrationMode::Fd =>
                    "fd passes a socket to each QEMU over QMP, and SSH does not carry file descriptors",
                _ => "its pipe or file is made on this machine",
            }
        )));
    }
    match from.same(to) {
        true => Ok("127.0.0.1".into()),
        false => to.address().map(str::to_string).ok_or_else(|| {
            Error::Spec(format!(
                "host `{}` has no address other hosts reach it at (a simulated lab's `Lab::local()` has one; \
                 for real hosts, give this machine's in hosts.toml: `[local]` with `address = ...`)",
                to.name()
            ))
        }),
    }
}
