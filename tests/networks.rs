//! Private networks: two VMs on one L2 segment (x86 or arm64 guests)
//! reach each other by the addresses the network gave them; then the
//! server migrates over each transport while the client streams from
//! it, and the stream arrives whole, its longest stall saved in each
//! migration's report.

mod common;

use common::stream;

use std::time::Duration;

use virtest::harness::runner::Job;
use virtest::harness::{Status, TestDef};
use virtest::migration::MigrationReport;
use virtest::prelude::*;

/// The port the server's web server listens on.
const HTTP_PORT: u16 = 8080;

/// How long a guest-side wait may take.
const WAIT: Duration = Duration::from_secs(60);

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
        let served = stream::sha256(server.remote()?, "/tmp/www/blob").await?;
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
        for mode in MigrationMode::STREAMED {
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
    stream::start(server(t).remote()?, t.vm.remote()?, server_address).await?;
    let migrating = t.vm_named("server").expect("added");
    let mut report: MigrationReport = migrating.migrate(mode).await?;
    stream::stop(migrating.login_remote().await?).await?;
    let streamed = stream::finish(server(t).remote()?, t.vm.remote()?)
        .await
        .map_err(|e| fail(format!("{mode}: {e}")))?;
    ensure!(
        streamed.lines > 50,
        "{mode}: only {} lines came",
        streamed.lines
    );
    report.record("stream_stall_ms", streamed.stall_ms)?;
    Ok(streamed.stall_ms)
}

/// The server VM.
fn server(t: &Test) -> &Vm {
    t.vms()
        .find(|(name, _)| *name == "server")
        .expect("added")
        .1
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
    if !common::on_demand("the Debian guests' stream through migrations") {
        return;
    }
    let _slots = common::guest_slots(2);
    common::debian();
    let (_tmp, job) = common::run_job(&defs(), &["guest=debian"], 1).await;
    check_stalls(&job);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_arm64_guests_stream_through_four_migrations() {
    let _slots = common::guest_slots(2);
    common::default_arm64();
    let (_tmp, job) = common::run_job(&defs(), &["guest=default-arm64"], 1).await;
    check_stalls(&job);
}
