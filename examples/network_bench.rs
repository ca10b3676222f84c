//! Two VMs on a private network: TCP throughput from one to the other
//! (a 32 MiB file over HTTP, timed by the client guest's clock), and,
//! per transport, the longest stall of a paced stream while its server
//! migrates, beside QEMU's downtime. Medians of N runs (default 3):
//!
//! ```sh
//! cargo run --release --example network_bench [RUNS] [--debian]
//! ```
//!
//! `--debian` uses the Debian guest instead of the default one.

mod common;
#[path = "../tests/common/stream.rs"]
mod stream;

use virtest::migration::{Migrate, MigrationMode};
use virtest::remote::Session;
use virtest::vm::{BootMode, Network, Vm, VmConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The size of the file fetched for throughput.
const BLOB_MIB: u64 = 32;

/// One fetch of the server's file by the client, in MiB/s.
async fn throughput(client: &impl Session, server: std::net::Ipv4Addr) -> Result<f64> {
    let out = client
        .run(&format!(
            "s=$(cut -d' ' -f1 /proc/uptime); \
             busybox wget -qO /dev/null http://{server}:8080/blob; \
             echo $s $(cut -d' ' -f1 /proc/uptime)"
        ))
        .await?
        .stdout;
    let times: Vec<f64> = out
        .split_whitespace()
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    match times[..] {
        [start, end] if end > start => Ok(BLOB_MIB as f64 / (end - start)),
        _ => Err(format!("bad times from the guest: {out:?}").into()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let runs = common::runs(3)?;
    let mut config = match std::env::args().any(|a| a == "--debian") {
        true => VmConfig::new(virtest::guest::guests::load("debian")?.0),
        false => VmConfig::default_guest()?,
    };
    config.boot = BootMode::Snapshot;
    let lan = Network::new("lan", 0)?;
    let mut vms = Vec::new();
    for name in ["server", "client"] {
        let mut config = config.clone();
        config.name = Some(name.into());
        let mut vm = Vm::new(config);
        lan.join(&mut vm)?;
        vm.power_on().await?;
        vms.push(vm);
    }
    let [server, client] = &mut vms[..] else {
        unreachable!("two VMs")
    };
    let address = server.address(&lan).ok_or("the server is on the network")?;
    server
        .login_remote()
        .await?
        .run(&format!(
            "mkdir -p /tmp/www && busybox head -c {} /dev/zero > /tmp/www/blob \
             && busybox httpd -p 8080 -h /tmp/www",
            BLOB_MIB << 20
        ))
        .await?;
    client.login_remote().await?;
    let mut rates = Vec::new();
    for _ in 0..runs {
        rates.push(throughput(client.remote()?, address).await?);
    }
    println!(
        "throughput: {:.1} MiB/s (median of {runs}, {BLOB_MIB} MiB over HTTP)",
        common::median(&rates)
    );
    println!("mode   downtime  stream stall  (ms, medians of {runs})");
    for mode in MigrationMode::STREAMED {
        let (mut downtimes, mut stalls) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            stream::start(server.remote()?, client.remote()?, address).await?;
            let report = server.migrate(mode).await?;
            stream::stop(server.login_remote().await?).await?;
            let streamed = stream::finish(server.remote()?, client.remote()?).await?;
            if streamed.lines <= 50 {
                return Err(format!("{mode}: only {} lines came", streamed.lines).into());
            }
            downtimes.push(report.downtime_ms as f64);
            stalls.push(streamed.stall_ms);
        }
        println!(
            "{:<6} {:>8.0}  {:>12.0}",
            mode.as_str(),
            common::median(&downtimes),
            common::median(&stalls)
        );
    }
    for vm in &mut vms {
        vm.within(std::time::Duration::ZERO).power_off().await?;
    }
    Ok(())
}
