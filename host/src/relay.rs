//! [`TcpRelay`]: a TCP port on 127.0.0.1 whose connections go on to a
//! unix socket (an SSH forward to a port on another host: OpenSSH lets
//! no multiplexed client choose a free local port, a relay can).

use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixStream};
use tokio::task::JoinHandle;

/// Relays each connection to its port to a unix socket, until dropped.
#[derive(Debug)]
pub struct TcpRelay {
    port: u16,
    task: JoinHandle<()>,
}

impl TcpRelay {
    /// Listens on a port of 127.0.0.1 the kernel chooses and relays to
    /// `socket`. Must be called within a tokio runtime.
    pub fn start(socket: &Path) -> std::io::Result<TcpRelay> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let listener = TcpListener::from_std(listener)?;
        let socket = socket.to_path_buf();
        let task = tokio::spawn(accept(listener, socket));
        Ok(TcpRelay { port, task })
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, socket: PathBuf) {
    while let Ok((mut tcp, _)) = listener.accept().await {
        let socket = socket.clone();
        tokio::spawn(async move {
            // A connection the far end refuses is closed at once, as a
            // refused TCP connection would be.
            if let Ok(mut unix) = UnixStream::connect(&socket).await {
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
            }
        });
    }
}
