//! The README's fleet example (two VMs on a private network, the guest
//! agent, the serial console) runs as written on both built-in guests,
//! from their ready snapshots; `tests/readme.rs` checks that the README
//! shows this test's code.

mod common;

use std::time::Duration;

use virtest::harness::{Status, TestDef};
use virtest::prelude::*;

/// The README's example, between the markers.
#[derive(Default)]
struct Fleet;
impl VirtTest for Fleet {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        // README fleet begin
        t.add_vm("server", &[])?;
        let lan = t.add_network("lan", &["server", "vm"])?;
        let server = t.vm_named("server").expect("added");
        let address = server.address(&lan).expect("on it"); // 10.10.0.1
        server.power_on().await?;
        let www = "mkdir -p /srv && echo hello > /srv/index.html && httpd -p 8080 -h /srv";
        server.login_remote().await?.run(www).await?;
        t.vm.power_on().await?;
        let get = format!("wget -qO- http://{address}:8080/");
        let page = t.vm.login_remote().await?.run(&get).await?.stdout;
        ensure!(page == "hello\n", "the server said {page:?}");
        let agent = t.vm.agent().await?;
        let by_agent = agent
            .exec(&["uname", "-r"], Duration::from_secs(10))
            .await?;
        let on_console = t.vm.serial().await?.run("uname -r").await?.stdout;
        ensure!(by_agent.stdout == on_console.as_bytes(), "two kernels?");
        // README fleet end
        Ok(())
    }
}

/// Runs the fleet on `guest`; both VMs start from its ready snapshot.
async fn fleet_on(guest: &str) {
    let defs = vec![TestDef::new("Fleet", Fleet::default)];
    let (_tmp, job) = common::run_job(&defs, &[&format!("guest={guest}")], 1).await;
    let test = &job.results.tests[0];
    assert_eq!(test.status, Status::Pass, "{:?}", test.fail_reason);
    let start = test.vm_start.as_deref().unwrap_or_default();
    assert!(start.contains("snapshot"), "{start}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_runs_on_the_default_guest() {
    let _slots = common::guest_slots(2);
    common::guest();
    fleet_on("default").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_runs_on_the_debian_guest() {
    let _slots = common::guest_slots(2);
    common::debian();
    fleet_on("debian").await;
}
