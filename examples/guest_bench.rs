//! Benchmark of the default guest: bootstrap time with packages already
//! fetched, initramfs size, and boot-to-ready time under TCG. Prints the
//! median of several runs.
//!
//! ```sh
//! cargo run --release --example guest_bench [RUNS]
//! ```

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use virtest::guest::apt::Apt;
use virtest::guest::bootstrap::{BootstrapOptions, bootstrap};
use virtest::guest::{Manifest, cache};
use virtest::qemu_cmdline::accel::Chosen;
use virtest::qemu_cmdline::binary::{self, BinaryKind};
use virtest::vm::{ConsoleOutput, GuestLaunch};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs = common::runs(5)?;
    let home = cache::default_home()?;
    // Make sure the packages are fetched and the shared guest exists.
    let manifest = bootstrap(&BootstrapOptions::new(home.clone()))?.manifest;

    let mut builds = Vec::new();
    for _ in 0..runs {
        let scratch = tempfile::tempdir()?;
        let mut opts = BootstrapOptions::new(scratch.path().to_path_buf());
        opts.apt = Some(Apt::system(home.join("packages")));
        let start = Instant::now();
        let done = bootstrap(&opts)?;
        builds.push(start.elapsed());
        let steps: Vec<String> = done
            .steps
            .iter()
            .map(|(s, d)| format!("{s} {:.2}", d.as_secs_f64()))
            .collect();
        eprintln!(
            "  bootstrap {:.2} s ({})",
            start.elapsed().as_secs_f64(),
            steps.join(", ")
        );
    }

    let mut boots = Vec::new();
    let mut guest_uptimes = Vec::new();
    for _ in 0..runs {
        let (wall, uptime) = boot_to_ready(&manifest)?;
        eprintln!(
            "  boot to ready {:.2} s (guest uptime {uptime:.2} s)",
            wall.as_secs_f64()
        );
        boots.push(wall);
        guest_uptimes.push(Duration::from_secs_f64(uptime));
    }

    let initrd = manifest.initrd_size();
    println!("default guest, {runs} runs, medians:");
    println!(
        "  bootstrap, packages fetched   {:>6.2} s   (target < 10 s)",
        common::median(&builds).as_secs_f64()
    );
    println!(
        "  initramfs size                {:>6.2} MiB (target < 8 MiB)",
        initrd as f64 / (1 << 20) as f64
    );
    println!(
        "  boot to ready line, TCG       {:>6.2} s   (target <= 2.5 s; QEMU start to marker seen)",
        common::median(&boots).as_secs_f64()
    );
    println!(
        "  guest uptime at ready line    {:>6.2} s",
        common::median(&guest_uptimes).as_secs_f64()
    );
    Ok(())
}

/// Starts QEMU, waits for the ready line, and returns the wall time and
/// the guest's own uptime printed on that line.
fn boot_to_ready(m: &Manifest) -> Result<(Duration, f64), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let console = dir.path().join("console.log");
    let guest = m.description()?;
    let qemu = binary::find(BinaryKind::System, None)?;
    let launch = GuestLaunch {
        qemu_version: Some(binary::probe(&qemu)?.version),
        ..GuestLaunch::new(
            &guest,
            qemu,
            Chosen::Tcg,
            ConsoleOutput::File(console.clone()),
        )
    };
    let mut command = launch.cmdline().to_command();
    let start = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = loop {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with(&m.ready_marker)) {
            let uptime = line
                .split("uptime=")
                .nth(1)
                .and_then(|u| u.trim().parse().ok())
                .unwrap_or(f64::NAN);
            break Ok((start.elapsed(), uptime));
        }
        if start.elapsed() > Duration::from_secs(30) || child.try_wait()?.is_some() {
            break Err(format!("no ready line; console:\n{text}").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill()?;
    child.wait()?;
    result
}
