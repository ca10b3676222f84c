//! SSH into the default guest: login time, per-command latency on an open
//! session (alone, and while another command of the session runs), the
//! host CPU this process uses while the guest runs `sleep 10`, and a
//! 32 MiB file's transfer both ways with this process's peak memory
//! growth; beside them, in the same run against the same guest,
//! OpenSSH's client with a ControlMaster (its login, a command through
//! the master, which includes starting `ssh`, and the file through
//! `cat`). Prints medians of several runs.
//!
//! ```sh
//! cargo run --release --example ssh_bench [RUNS]
//! ```

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use virtest::guest::bootstrap::{BootstrapOptions, bootstrap};
use virtest::guest::cache;
use virtest::qemu_cmdline::accel::Chosen;
use virtest::qemu_cmdline::binary::{self, BinaryKind};
use virtest::remote::{Auth, SshConfig, SshSession};
use virtest::vm::{ConsoleOutput, GuestLaunch};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs = common::runs(5)?;
    let manifest = bootstrap(&BootstrapOptions::new(cache::default_home()?))?.manifest;
    let dir = tempfile::tempdir()?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let console = dir.path().join("console.log");
    let guest = manifest.description()?;
    let qemu = binary::find(BinaryKind::System, None)?;
    let launch = GuestLaunch {
        qemu_version: Some(binary::probe(&qemu)?.version),
        ssh_host_port: port,
        ..GuestLaunch::new(
            &guest,
            qemu,
            Chosen::Tcg,
            ConsoleOutput::File(console.clone()),
        )
    };
    let mut child = launch
        .cmdline()
        .to_command()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = measure(&manifest, port, &console, runs).await;
    child.kill()?;
    child.wait()?;
    result
}

async fn measure(
    m: &virtest::guest::Manifest,
    port: u16,
    console: &std::path::Path,
    runs: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    while !std::fs::read_to_string(console)
        .unwrap_or_default()
        .contains(&m.ready_marker)
    {
        if start.elapsed() > Duration::from_secs(60) {
            return Err("the guest never printed its ready line".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let config = |auth| SshConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        user: m.credentials.user.clone(),
        auth,
        known_host_keys: vec![m.host_key.public.clone()],
    };
    let (mut by_key, mut by_password) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        SshSession::connect(
            &config(Auth::KeyFile(m.private_key_path())),
            Duration::from_secs(30),
        )
        .await?;
        by_key.push(t.elapsed());
        let t = Instant::now();
        SshSession::connect(
            &config(Auth::Password(m.credentials.password.clone())),
            Duration::from_secs(30),
        )
        .await?;
        by_password.push(t.elapsed());
    }
    let ssh = SshSession::connect(
        &config(Auth::KeyFile(m.private_key_path())),
        Duration::from_secs(30),
    )
    .await?;
    let mut latencies = Vec::new();
    for _ in 0..runs * 10 {
        let t = Instant::now();
        ssh.run("true").await?;
        latencies.push(t.elapsed());
    }
    let mut beside_long = Vec::new();
    for _ in 0..runs {
        let long = ssh.run("sleep 1");
        let quick = async {
            // Let the long command start first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let t = Instant::now();
            ssh.run("true").await.map(|_| t.elapsed())
        };
        let (long, quick) = tokio::join!(long, quick);
        long?;
        beside_long.push(quick?);
    }
    let transfers = transfer(&ssh, runs.min(3)).await?;
    let mut cpu_shares = Vec::new();
    for _ in 0..runs.min(3) {
        let (cpu, t) = (cpu_time(), Instant::now());
        ssh.run("sleep 10").await?;
        cpu_shares.push((cpu_time() - cpu).as_secs_f64() / t.elapsed().as_secs_f64() * 100.0);
    }
    println!("SSH to the default guest (dropbear, TCG), medians:");
    println!(
        "  login by key                {:>7.0} ms",
        common::median(&by_key).as_secs_f64() * 1e3
    );
    println!(
        "  login by password           {:>7.0} ms",
        common::median(&by_password).as_secs_f64() * 1e3
    );
    println!(
        "  command on an open session  {:>7.1} ms  (`true`, {} runs)",
        common::median(&latencies).as_secs_f64() * 1e3,
        latencies.len()
    );
    println!(
        "  command beside a running one{:>7.1} ms  (`true` while `sleep 1` runs)",
        common::median(&beside_long).as_secs_f64() * 1e3
    );
    let mib_per_s = |took: Duration| TRANSFER_MIB as f64 / took.as_secs_f64();
    println!(
        "  receive_file {TRANSFER_MIB} MiB         {:>7.1} MiB/s",
        mib_per_s(transfers.receive)
    );
    println!(
        "  send_file {TRANSFER_MIB} MiB            {:>7.1} MiB/s",
        mib_per_s(transfers.send)
    );
    println!(
        "  peak memory growth          {:>7.1} MiB  (this process, across the transfers)",
        transfers.peak_growth_kib as f64 / 1024.0
    );
    let (openssh_login, openssh_command) = openssh(m, port, runs)?;
    println!(
        "  OpenSSH: login by key       {:>7.0} ms  (ControlMaster up)",
        openssh_login.as_secs_f64() * 1e3
    );
    println!(
        "  OpenSSH: command via master {:>7.1} ms  (`ssh -S SOCKET true`, {} runs)",
        openssh_command.as_secs_f64() * 1e3,
        runs * 10
    );
    cpu_shares.sort_by(f64::total_cmp);
    println!(
        "  host CPU during `sleep 10`  {:>7.2} %   of one core (target < 2 %)",
        cpu_shares[cpu_shares.len() / 2]
    );
    Ok(())
}

/// OpenSSH's client against the same guest: the median time to bring a
/// ControlMaster up (a login by key), and of a command through it.
fn openssh(
    m: &virtest::guest::Manifest,
    port: u16,
    runs: usize,
) -> Result<(Duration, Duration), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let control = dir.path().join("master");
    let ssh = |extra: &[&str]| {
        let mut command = Command::new("ssh");
        command
            .args(["-p", &port.to_string(), "-i"])
            .arg(m.private_key_path())
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .arg("-o")
            .arg(format!("ControlPath={}", control.display()))
            .args(extra)
            .arg(format!("{}@127.0.0.1", m.credentials.user))
            .stdin(Stdio::null());
        command
    };
    let run = |mut command: Command| -> Result<Duration, Box<dyn std::error::Error>> {
        let t = Instant::now();
        let status = command.status()?;
        if !status.success() {
            return Err(format!("{command:?} failed: {status}").into());
        }
        Ok(t.elapsed())
    };
    let close = || {
        let _ = ssh(&["-O", "exit"]).stderr(Stdio::null()).status();
    };
    let mut logins = Vec::new();
    for _ in 0..runs {
        // -f returns once the master has logged in; -N runs nothing.
        logins.push(run(ssh(&["-M", "-f", "-N"]))?);
        close();
    }
    run(ssh(&["-M", "-f", "-N"]))?;
    let mut commands = Vec::new();
    for _ in 0..runs * 10 {
        let mut command = ssh(&[]);
        command.arg("true");
        match run(command) {
            Ok(took) => commands.push(took),
            Err(e) => {
                close();
                return Err(e);
            }
        }
    }
    let mut cats = Vec::new();
    for _ in 0..runs.min(3) {
        let mut command = ssh(&[]);
        command
            .arg(format!("cat {GUEST_FILE}"))
            .stdout(std::fs::File::create(dir.path().join("cat"))?);
        match run(command) {
            Ok(took) => cats.push(took),
            Err(e) => {
                close();
                return Err(e);
            }
        }
    }
    close();
    println!(
        "  OpenSSH: cat {TRANSFER_MIB} MiB via master {:>5.1} MiB/s",
        TRANSFER_MIB as f64 / common::median(&cats).as_secs_f64()
    );
    Ok((common::median(&logins), common::median(&commands)))
}

/// The size of the file transferred.
const TRANSFER_MIB: u64 = 32;
/// Where it is in the guest (left there for OpenSSH's turn).
const GUEST_FILE: &str = "/tmp/ssh-bench";

/// Median transfer times, and how much this process's peak resident
/// memory grew across them.
struct Transfers {
    receive: Duration,
    send: Duration,
    peak_growth_kib: u64,
}

async fn transfer(ssh: &SshSession, runs: usize) -> Result<Transfers, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let local = dir.path().join("file");
    ssh.run(&format!(
        "head -c {} /dev/urandom > {GUEST_FILE}",
        TRANSFER_MIB << 20
    ))
    .await?;
    let peak_before = peak_rss_kib();
    let (mut receive, mut send) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        ssh.receive_file(GUEST_FILE, &local).await?;
        receive.push(t.elapsed());
        let t = Instant::now();
        ssh.send_file(&local, "/tmp/ssh-bench-sent").await?;
        send.push(t.elapsed());
        ssh.run("rm /tmp/ssh-bench-sent").await?;
    }
    Ok(Transfers {
        receive: common::median(&receive),
        send: common::median(&send),
        peak_growth_kib: peak_rss_kib().saturating_sub(peak_before),
    })
}

/// This process's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of this process, from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum());
    Duration::from_millis(ticks * 10)
}
