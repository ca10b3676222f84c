//! Private networks: two VMs on one L2 segment reach each other by the
//! addresses the network gave them; then the server migrates over each
//! transport while the client streams from it, and the stream arrives
//! whole, its longest stall saved in each migration's report.

mod common;

use std::time::Duration;

use virtest::harness::runner::Job;
use virtest::harness::{Status, TestDef};
use virtest::migration::MigrationReport;
use virtest::prelude::*;

/// The port the server streams on.
const STREAM_PORT: u16 = 9000;

/// The port the server's web server listens on.
const HTTP_PORT: u16 = 8080;

/// How long a guest-side wait may take.
const WAIT: Duration = Duration::from_secs(60);

/// The server streams base64 lines of random bytes, paced, until
/// `/tmp/stop` exists, then a last `END` line; `/tmp/sent` keeps what it
/// sent. Uses busybox only, which both guests have.
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

/// The shell command that writes `script` to `file` and runs it in the
/// background, detached from the SSH session.
fn in_background(file: &str, script: &str) -> String {
    format!("cat > {file} <<'EOF'\n{script}\nEOF\nsetsid sh {file} >/dev/null 2>&1 </dev/null &")
}

/// Starts the stream's server: it waits for the client on [`STREAM_PORT`].
fn server_command() -> String {
    let script =
        format!("{{ {SERVER}; }} | busybox tee /tmp/sent | busybox nc -l -p {STREAM_PORT}");
    format!(
        "rm -f /tmp/stop /tmp/sent; {}",
        in_background("/tmp/server.sh", &script)
    )
}

/// Starts the stream's client against `server`. Its `nc` reads a FIFO
/// it holds open itself, an input that never ends: at the end of its
/// input it would shut the connection.
fn client_command(server: std::net::Ipv4Addr) -> String {
    let script = format!(
        "cat > /tmp/client.awk <<'AWK'\n{CLIENT_AWK}\nAWK\n\
         busybox nc {server} {STREAM_PORT} <>/tmp/hold | busybox awk -f /tmp/client.awk"
    );
    format!(
        "rm -f /tmp/got /tmp/stall /tmp/stall.tmp /tmp/hold; busybox mkfifo /tmp/hold; {}",
        in_background("/tmp/client.sh", &script)
    )
}

/// Checks the bad ways to make a network: each is refused, and nothing
/// is left half-joined.
fn bad_networks_are_refused(t: &mut Test) -> TestResult {
    let cases: [(&str, &[&str], &str); 4] = [
        ("empty", &[], "a network needs at least one VM"),
        (
            "lan2",
            &["vm", "nobody"],
            "the test has no VM named `nobody`",
        ),
        ("lan3", &["vm", "vm"], "VM `vm` is named twice"),
        ("two words", &["vm"], "letters, digits"),
    ];
    for (name, members, expected) in cases {
        match t.add_network(name, members) {
            Ok(_) => return Err(fail(format!("network `{name}` {members:?} was accepted"))),
            Err(e) => ensure!(
                e.to_string().contains(expected),
                "network `{name}` {members:?}: {e}"
            ),
        }
    }
    ensure!(
        t.vm.config().networks.is_empty(),
        "a refused network left a NIC: {:?}",
        t.vm.config().networks
    );
    Ok(())
}

/// Two VMs on `lan`: the client fetches a file by the server's address,
/// then streams from it through a migration over each transport.
#[derive(Default)]
struct StreamThroughMigrations;
impl VirtTest for StreamThroughMigrations {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        bad_networks_are_refused(t)?;
        t.add_vm("server", &[])?;
        let lan = t.add_network("lan", &["server", "vm"])?;
        ensure!(
            t.add_network("lan", &["vm"]).is_err(),
            "a second network named `lan` was accepted"
        );
        let server_address = t.vm_named("server").and_then(|vm| vm.address(&lan));
        let client_address = t.vm.address(&lan);
        ensure!(
            (server_address, client_address)
                == (Some("10.10.0.1".parse()?), Some("10.10.0.2".parse()?)),
            "addresses {server_address:?}, {client_address:?}"
        );
        let server_address = server_address.expect("checked");

        let server = t.vm_named("server").expect("added");
        server.power_on().await?;
        server
            .login_remote()
            .await?
            .run(&format!(
                "mkdir -p /tmp/www && busybox head -c 1048576 /dev/urandom > /tmp/www/blob \
                 && busybox httpd -p {HTTP_PORT} -h /tmp/www"
            ))
            .await?;
        let served = sha256(server.remote()?, "/tmp/www/blob").await?;
        t.vm.power_on().await?;
        t.vm.login_remote().await?;
        let fetched = t
            .vm
            .remote()?
            .wait_until_succeeds(
                &format!(
                    "busybox wget -qO- http://{server_address}:{HTTP_PORT}/blob | busybox sha256sum"
                ),
                WAIT,
            )
            .await?
            .stdout;
        ensure!(
            fetched.split_whitespace().next() == Some(served.as_str()),
            "the client fetched {fetched:?}, the server has {served}"
        );

        match t.add_network("late", &["server"]) {
            Ok(_) => return Err(fail("a VM that is on joined a network")),
            Err(e) => ensure!(e.to_string().contains("has been powered on"), "{e}"),
        }
        for mode in MigrationMode::ALL {
            let stall_ms = stream_through_migration(t, mode, server_address).await?;
            t.log(format!(
                "{mode}: the stream's longest stall was {stall_ms} ms"
            ));
        }
        Ok(())
    }
}

/// Streams from the server to `t.vm` while the server migrates over
/// `mode`; checks the stream arrived whole and spanned the migration, and
/// records its longest stall in the migration's report.
async fn stream_through_migration(
    t: &mut Test,
    mode: MigrationMode,
    server_address: std::net::Ipv4Addr,
) -> Result<f64, TestError> {
    let server = t.vm_named("server").expect("added");
    let session = server.remote()?;
    session.run(&server_command()).await?;
    session.wait_for_open_port(STREAM_PORT, WAIT).await?;
    let client = t.vm.remote()?;
    client.run(&client_command(server_address)).await?;
    client
        .wait_until_succeeds("[ $(busybox wc -l < /tmp/got) -ge 50 ]", WAIT)
        .await?;
    let server = t.vm_named("server").expect("added");
    let mut report: MigrationReport = server.migrate(mode).await?;
    server.login_remote().await?.run("touch /tmp/stop").await?;
    let client = t.vm.remote()?;
    // `/tmp/stall` is written once `END` came: the server sent it all.
    let stall = match client.wait_until_succeeds("cat /tmp/stall", WAIT).await {
        Ok(done) => done.stdout,
        Err(e) => {
            let state = "busybox wc -l /tmp/got /tmp/sent; ls /tmp; ps; ip addr; cat /proc/net/tcp";
            let client_state = client.run(state).await.map(|r| r.stdout);
            let server = t.vm_named("server").expect("added");
            let server_state = server.remote()?.run(state).await.map(|r| r.stdout);
            return Err(fail(format!(
                "{mode}: the stream did not end: {e}\nclient: {client_state:?}\nserver: {server_state:?}"
            )));
        }
    };
    let got = sha256(client, "/tmp/got").await?;
    let server = t.vm_named("server").expect("added");
    let sent = sha256(server.remote()?, "/tmp/sent").await?;
    ensure!(
        got == sent,
        "{mode}: the client got other bytes than the server sent ({got} != {sent})"
    );
    let mut fields = stall.split_whitespace();
    let lines: u64 = fields.next().unwrap_or("").parse()?;
    let gap_s: f64 = fields.next().unwrap_or("").parse()?;
    ensure!(lines > 50, "{mode}: only {lines} lines came");
    let stall_ms = (gap_s * 1000.0).round();
    report.record("stream_stall_ms", stall_ms)?;
    Ok(stall_ms)
}

/// The SHA-256 of `path` in the guest.
async fn sha256(session: &impl Session, path: &str) -> Result<String, TestError> {
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

fn defs() -> Vec<TestDef> {
    vec![TestDef::new(
        "StreamThroughMigrations",
        StreamThroughMigrations::default,
    )]
}

/// Every migration report of the server holds the stream's stall.
fn check_stalls(job: &Job) {
    let test = &job.results.tests[0];
    assert_eq!(
        (test.status, test.fail_reason.as_deref()),
        (Status::Pass, None),
        "{}",
        test.logdir.display()
    );
    let server_dir = test.logdir.join("vm-server");
    for n in 1..=4 {
        let path = server_dir.join(format!("migration-{n}.json"));
        let report: MigrationReport =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let stall = report.measurements["stream_stall_ms"];
        assert!(stall > 0.0, "{}: stall {stall}", path.display());
        eprintln!(
            "{}: downtime {} ms, stream stall {stall} ms",
            report.mode, report.downtime_ms
        );
    }
    assert!(!server_dir.join("migration-5.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_default_guests_stream_through_four_migrations() {
    let _slots = common::guest_slots(2);
    common::guest();
    let (_tmp, job) = common::run_job(&defs(), &[], 1).await;
    check_stalls(&job);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_debian_guests_stream_through_four_migrations() {
    let _slots = common::guest_slots(2);
    common::debian();
    let (_tmp, job) = common::run_job(&defs(), &["guest=debian"], 1).await;
    check_stalls(&job);
}
