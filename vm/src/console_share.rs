//! A VM's serial console shared with people: a unix socket where a client
//! (`virtest console`) sees the console's output as it comes (the last
//! lines first) and types into the guest, while `console.log` keeps
//! recording. Several clients may attach at once.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use crate::console::Console;

/// The shared console; dropping it closes the socket and every client.
#[derive(Debug)]
pub struct SharedConsole {
    path: PathBuf,
    tasks: JoinSet<()>,
}

impl SharedConsole {
    /// Shares `console` on a new socket at `path` (mode 0600); each
    /// client first sees the last `context_lines` lines.
    pub fn new(
        console: &Console,
        path: &Path,
        context_lines: usize,
    ) -> std::io::Result<SharedConsole> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let mut tasks = JoinSet::new();
        let console = console.clone();
        tasks.spawn(async move {
            let mut clients = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                clients.spawn(serve(console.clone(), stream, context_lines));
            }
        });
        Ok(SharedConsole {
            path: path.to_path_buf(),
            tasks,
        })
    }

    /// Where clients connect.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SharedConsole {
    fn drop(&mut self) {
        self.tasks.abort_all();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One client: output to it, its input to the guest, until it leaves.
async fn serve(console: Console, stream: UnixStream, context_lines: usize) {
    let (mut from_client, mut to_client) = stream.into_split();
    let mut cursor = console.cursor();
    let context = match context_lines {
        0 => String::new(),
        lines => console.tail(lines).replace('\n', "\r\n") + "\r\n",
    };
    let output = async {
        to_client.write_all(context.as_bytes()).await?;
        loop {
            let (bytes, next) = console.output_after(cursor).await;
            cursor = next;
            to_client.write_all(&bytes).await?;
        }
    };
    // A client whose input ended (a pipe) still sees the output, until
    // it leaves.
    let input = async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = from_client.read(&mut chunk).await?;
            if n == 0 {
                return std::future::pending::<std::io::Result<()>>().await;
            }
            console.write(&chunk[..n]).await?;
        }
    };
    let _: std::io::Result<()> = tokio::select! {
        result = output => result,
        result = input => result,
    };
}
