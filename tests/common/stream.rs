//! A paced TCP stream from one guest to another through a migration,
//! with busybox only (both guests have it): it checks the bytes arrive
//! whole and measures the longest stall by the client's clock. Shared by
//! `tests/networks.rs` and `examples/network_bench.rs`.

use std::net::Ipv4Addr;
use std::time::Duration;

use virtest::remote::Session;

/// The port the server streams on.
pub const STREAM_PORT: u16 = 9000;

/// How long a guest-side wait may take.
const WAIT: Duration = Duration::from_secs(60);

/// The server streams base64 lines of random bytes, paced, until
/// `/tmp/stop` exists, then a last `END` line; `/tmp/sent` keeps what it
/// sent.
const SERVER: &str = "while [ ! -e /tmp/stop ]; do busybox head -c 3072 /dev/urandom | busybox base64; \
    busybox usleep 20000; done; echo END";

/// The client keeps every line in `/tmp/got`, and when `END` comes writes
/// `LINES LONGEST_GAP_SECONDS` to `/tmp/stall`: the gap between lines
/// read by the guest's uptime clock, without a process per line.
const CLIENT_AWK: &str = r#"BEGIN { last = -1; max = 0 }
{ print > "/tmp/got"; n++
  getline up < "/proc/uptime"; close("/proc/uptime"); split(up, f, " ")
  if (last >= 0 && f[1] - last > max) max = f[1] - last; last = f[1] }
/^END$/ { exit }
END { close("/tmp/got"); printf "%d %.3f\n", n, max > "/tmp/stall.tmp"
  close("/tmp/stall.tmp"); system("mv /tmp/stall.tmp /tmp/stall") }"#;

/// What went wrong with a stream.
#[derive(Debug)]
pub struct StreamError(String);

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StreamError {}

impl From<virtest::remote::Error> for StreamError {
    fn from(error: virtest::remote::Error) -> StreamError {
        StreamError(error.to_string())
    }
}

/// A finished stream.
#[derive(Debug)]
pub struct Streamed {
    /// Lines received, `END` included.
    pub lines: u64,
    /// The longest gap between two lines, ms.
    pub stall_ms: f64,
}

/// The shell command that writes `script` to `file` and runs it in the
/// background, detached from the SSH session.
fn in_background(file: &str, script: &str) -> String {
    format!("cat > {file} <<'EOF'\n{script}\nEOF\nsetsid sh {file} >/dev/null 2>&1 </dev/null &")
}

/// Starts the server on `server`, the client on `client` against
/// `server_address`, and returns once 50 lines came.
pub async fn start(
    server: &impl Session,
    client: &impl Session,
    server_address: Ipv4Addr,
) -> Result<(), StreamError> {
    let script =
        format!("{{ {SERVER}; }} | busybox tee /tmp/sent | busybox nc -l -p {STREAM_PORT}");
    server
        .run(&format!(
            "rm -f /tmp/stop /tmp/sent; {}",
            in_background("/tmp/server.sh", &script)
        ))
        .await?;
    server.wait_for_open_port(STREAM_PORT, WAIT).await?;
    // The client's `nc` reads a FIFO it holds open itself, an input that
    // never ends: at the end of its input it would shut the connection.
    let script = format!(
        "cat > /tmp/client.awk <<'AWK'\n{CLIENT_AWK}\nAWK\n\
         busybox nc {server_address} {STREAM_PORT} <>/tmp/hold | busybox awk -f /tmp/client.awk"
    );
    client
        .run(&format!(
            "rm -f /tmp/got /tmp/stall /tmp/stall.tmp /tmp/hold; busybox mkfifo /tmp/hold; {}",
            in_background("/tmp/client.sh", &script)
        ))
        .await?;
    client
        .wait_until_succeeds("[ $(busybox wc -l < /tmp/got) -ge 50 ]", WAIT)
        .await?;
    Ok(())
}

/// Tells the server to end the stream.
pub async fn stop(server: &impl Session) -> Result<(), StreamError> {
    server.run("touch /tmp/stop").await?;
    Ok(())
}

/// Waits for the stream [`stop`] ended to arrive, and checks the client
/// got exactly what the server sent; on a stream that does not end, the
/// error shows both sides' state.
pub async fn finish(server: &impl Session, client: &impl Session) -> Result<Streamed, StreamError> {
    // `/tmp/stall` is written once `END` came: the server sent it all.
    let stall = match client.wait_until_succeeds("cat /tmp/stall", WAIT).await {
        Ok(done) => done.stdout,
        Err(e) => {
            let state = "busybox wc -l /tmp/got /tmp/sent; ls /tmp; ps; ip addr; cat /proc/net/tcp";
            let client_state = client.run(state).await.map(|r| r.stdout);
            let server_state = server.run(state).await.map(|r| r.stdout);
            return Err(StreamError(format!(
                "the stream did not end: {e}\nclient: {client_state:?}\nserver: {server_state:?}"
            )));
        }
    };
    let (got, sent) = (
        sha256(client, "/tmp/got").await?,
        sha256(server, "/tmp/sent").await?,
    );
    if got != sent {
        return Err(StreamError(format!(
            "the client got other bytes than the server sent ({got} != {sent})"
        )));
    }
    let mut fields = stall.split_whitespace();
    let parsed = fields
        .next()
        .and_then(|n| n.parse().ok())
        .zip(fields.next().and_then(|s| s.parse::<f64>().ok()));
    let (lines, gap_s) =
        parsed.ok_or_else(|| StreamError(format!("a bad /tmp/stall: {stall:?}")))?;
    Ok(Streamed {
        lines,
        stall_ms: (gap_s * 1000.0).round(),
    })
}

/// The SHA-256 of `path` in the guest.
pub async fn sha256(session: &impl Session, path: &str) -> Result<String, StreamError> {
    let out = session
        .run(&format!("busybox sha256sum {path}"))
        .await?
        .stdout;
    Ok(out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}
