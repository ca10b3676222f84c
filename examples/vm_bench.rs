//! The `Vm` with the default guest: power_on to login_remote success,
//! beside the time the guest's ready line took and one SSH login; and the
//! host memory this process uses per running VM. Prints medians.
//!
//! ```sh
//! cargo run --release --example vm_bench [RUNS]
//! ```

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use virtest::guest::description::Ready;
use virtest::remote::{Auth, SshConfig, SshSession};
use virtest::vm::{Vm, VmConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let runs = common::runs(5)?;
    let config = VmConfig::default_guest()?;
    let Ready::Console(marker) = config.guest.ready.clone() else {
        return Err("the default guest announces itself on the console".into());
    };
    let (mut total, mut ready_host, mut ready_guest, mut login) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let mut vm = Vm::new(config.clone());
        let start = Instant::now();
        vm.power_on().await?;
        // Watch the ready line arrive while login_remote waits for it.
        let console = vm.console()?.clone();
        let marker = marker.clone();
        let ready_at = tokio::spawn(async move {
            loop {
                let end = console.find(Default::default(), &marker);
                // Wait for the whole line, which carries the uptime.
                if let Some(end) = end.filter(|end| console.find(*end, "\n").is_some()) {
                    let text = console.text_since(Default::default());
                    let uptime = text[end.0 as usize..]
                        .trim_start()
                        .strip_prefix("uptime=")
                        .and_then(|r| r.split_whitespace().next())
                        .and_then(|u| u.parse::<f64>().ok());
                    return (start.elapsed(), uptime);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        vm.login_remote().await?;
        let elapsed = start.elapsed();
        let (seen, uptime) = ready_at.await?;
        // One more login on the running guest: what a login alone costs.
        let t = Instant::now();
        SshSession::connect(&ssh_config(&vm)?, Duration::from_secs(30)).await?;
        let one_login = t.elapsed();
        println!(
            "run {run}: power_on→login {:.0} ms, ready line seen {:.0} ms (guest uptime {:.2} s), one login {:.0} ms",
            ms(elapsed),
            ms(seen),
            uptime.unwrap_or(f64::NAN),
            ms(one_login)
        );
        total.push(ms(elapsed));
        ready_host.push(ms(seen));
        ready_guest.push(uptime.unwrap_or(f64::NAN) * 1000.0);
        login.push(ms(one_login));
        vm.power_off().await?;
    }
    let (total, ready_host, login) = (
        common::median(&total),
        common::median(&ready_host),
        common::median(&login),
    );
    println!("\nmedians of {runs} runs:");
    println!("  power_on → login_remote success: {total:.0} ms");
    println!("  ready line seen on the host:    {ready_host:.0} ms");
    println!(
        "  guest uptime at the ready line: {:.0} ms",
        common::median(&ready_guest)
    );
    println!("  one SSH login:                  {login:.0} ms");
    println!(
        "  after the ready line, login_remote took {:.0} ms: {:.0} ms over one login (target ≤ 150)",
        total - ready_host,
        total - ready_host - login
    );
    memory(&config).await
}

/// This process's resident memory with 0, 1 and 2 VMs on and logged in.
async fn memory(config: &VmConfig) -> Result<()> {
    let before = rss_kib("self")?;
    let mut vms = Vec::new();
    for count in 1..=2 {
        let mut vm = Vm::new(config.clone());
        vm.power_on().await?;
        vm.login_remote().await?;
        vm.remote()?.run("true").await?;
        let qemu = rss_kib(&vm.pid().unwrap_or_default().to_string())?;
        vms.push(vm);
        let now = rss_kib("self")?;
        println!(
            "  harness RSS with {count} VM(s): {} KiB, {} KiB per VM (each QEMU: {} MiB)",
            now,
            (now - before) / count,
            qemu / 1024
        );
    }
    for vm in &mut vms {
        vm.power_off().await?;
    }
    Ok(())
}

fn ssh_config(vm: &Vm) -> Result<SshConfig> {
    let login = &vm.config().guest.login;
    Ok(SshConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], vm.ssh_access().ok_or("off")?.port)),
        user: login.user.clone(),
        auth: Auth::KeyFile(login.key.clone().ok_or("the default guest has a key")?),
        known_host_keys: login.host_key.iter().cloned().collect(),
    })
}

fn rss_kib(pid: &str) -> Result<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
