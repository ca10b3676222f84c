//! QMP throughput: virtest-qmp beside a raw-socket loop against the same
//! QEMU (`-machine none`), one command at a time and 8 in flight, with
//! the process's CPU time per command. Prints medians of several runs.
//!
//! ```sh
//! cargo run --release -p virtest-qmp --example qmp_bench [COMMANDS] [RUNS] [current|multi] [transcript]
//! ```
//!
//! The third argument picks tokio's runtime: one thread (the default) or
//! a worker per core. With `transcript`, virtest-qmp writes its
//! transcript to a file, as every VM's QMP connection does.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use virtest_qmp::{Options, Qmp, TranscriptWriter};

const IN_FLIGHT: usize = 8;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |n: usize| std::env::args().nth(n);
    let commands: usize = arg(1).map(|a| a.parse()).transpose()?.unwrap_or(20_000);
    let runs: usize = arg(2).map(|a| a.parse()).transpose()?.unwrap_or(5);
    let runtime = match arg(3).as_deref() {
        None | Some("current") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Some("multi") => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        Some(other) => return Err(format!("unknown runtime `{other}`: current or multi").into()),
    };
    let transcript = match arg(4).as_deref() {
        None => false,
        Some("transcript") => true,
        Some(other) => return Err(format!("unknown option `{other}`: transcript").into()),
    };
    runtime.block_on(bench(commands, runs, transcript))
}

async fn bench(
    commands: usize,
    runs: usize,
    transcript: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (raw_sock, ours_sock) = (dir.path().join("raw.sock"), dir.path().join("ours.sock"));
    let _qemu = QemuGuard::start(&raw_sock, &ours_sock)?;

    let mut raw = RawQmp::connect(&raw_sock)?;
    let options = match transcript {
        true => Options {
            transcript: Some(TranscriptWriter::spawn(Box::new(std::fs::File::create(
                dir.path().join("qmp.log"),
            )?))?),
            ..Options::default()
        },
        false => Options::default(),
    };
    let qmp = Qmp::connect_unix(&ours_sock, Duration::from_secs(10), options).await?;
    let (major, minor, micro) = qmp.greeting().version;

    let mut table: Vec<(&str, Vec<Sample>, Vec<Sample>)> = vec![
        ("one at a time", vec![], vec![]),
        ("8 in flight", vec![], vec![]),
    ];
    for _ in 0..runs {
        table[0]
            .1
            .push(measure(commands, || raw.sequential(commands)));
        table[0]
            .2
            .push(measure_async(commands, sequential(&qmp, commands)).await);
        table[1]
            .1
            .push(measure(commands, || raw.pipelined(commands)));
        table[1]
            .2
            .push(measure_async(commands, in_flight(&qmp, commands)).await);
    }

    println!(
        "QMP against QEMU {major}.{minor}.{micro} (-machine none), query-status, {commands} commands, median of {runs} runs{}",
        if transcript {
            ", virtest-qmp writing its transcript"
        } else {
            ""
        }
    );
    println!(
        "{:<16} {:>12} {:>12} {:>7} {:>16} {:>16}",
        "", "raw socket", "virtest-qmp", "ratio", "raw CPU/cmd", "virtest CPU/cmd"
    );
    for (name, raw, ours) in &mut table {
        let (raw, ours) = (median(raw), median(ours));
        println!(
            "{name:<16} {:>10.0}/s {:>10.0}/s {:>7.2} {:>13.1} µs {:>13.1} µs",
            raw.rate,
            ours.rate,
            ours.rate / raw.rate,
            raw.cpu_us,
            ours.cpu_us
        );
    }
    qmp.quit().await?;
    Ok(())
}

#[derive(Clone, Copy)]
struct Sample {
    rate: f64,
    cpu_us: f64,
}

fn median(samples: &mut [Sample]) -> Sample {
    samples.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    samples[samples.len() / 2]
}

fn measure(commands: usize, f: impl FnOnce() -> std::io::Result<()>) -> Sample {
    let (cpu, start) = (cpu_time(), Instant::now());
    f().expect("raw loop");
    sample(commands, start.elapsed(), cpu_time() - cpu)
}

async fn measure_async(
    commands: usize,
    f: impl std::future::Future<Output = virtest_qmp::Result<()>>,
) -> Sample {
    let (cpu, start) = (cpu_time(), Instant::now());
    f.await.expect("virtest-qmp loop");
    sample(commands, start.elapsed(), cpu_time() - cpu)
}

fn sample(commands: usize, wall: Duration, cpu: Duration) -> Sample {
    Sample {
        rate: commands as f64 / wall.as_secs_f64(),
        cpu_us: cpu.as_secs_f64() * 1e6 / commands as f64,
    }
}

async fn sequential(qmp: &Qmp, commands: usize) -> virtest_qmp::Result<()> {
    for _ in 0..commands {
        qmp.execute_raw("query-status", Value::Null).await?;
    }
    Ok(())
}

async fn in_flight(qmp: &Qmp, commands: usize) -> virtest_qmp::Result<()> {
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let qmp = qmp.clone();
            tokio::spawn(async move { sequential(&qmp, commands / IN_FLIGHT).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task")?;
    }
    Ok(())
}

/// User plus system CPU time of this process, from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum());
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// The baseline: blocking writes and line reads on a plain socket.
struct RawQmp {
    write: UnixStream,
    read: BufReader<UnixStream>,
    line: String,
}

impl RawQmp {
    fn connect(path: &Path) -> std::io::Result<RawQmp> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() > Duration::from_secs(10) => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let mut raw = RawQmp {
            read: BufReader::new(stream.try_clone()?),
            write: stream,
            line: String::new(),
        };
        raw.reply()?; // greeting
        raw.write
            .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
        raw.reply()?;
        Ok(raw)
    }

    /// Reads lines until a reply (skipping events).
    fn reply(&mut self) -> std::io::Result<()> {
        loop {
            self.line.clear();
            if self.read.read_line(&mut self.line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if !self.line.contains("\"event\"") {
                return Ok(());
            }
        }
    }

    fn sequential(&mut self, commands: usize) -> std::io::Result<()> {
        for _ in 0..commands {
            self.write.write_all(b"{\"execute\":\"query-status\"}\n")?;
            self.reply()?;
        }
        Ok(())
    }

    fn pipelined(&mut self, commands: usize) -> std::io::Result<()> {
        let batch = b"{\"execute\":\"query-status\"}\n".repeat(IN_FLIGHT);
        for _ in 0..commands / IN_FLIGHT {
            self.write.write_all(&batch)?;
            for _ in 0..IN_FLIGHT {
                self.reply()?;
            }
        }
        Ok(())
    }
}

/// One QEMU with two QMP sockets, killed on drop.
struct QemuGuard(Child);

impl QemuGuard {
    fn start(a: &Path, b: &Path) -> std::io::Result<QemuGuard> {
        let qmp = |p: &PathBuf| format!("unix:{},server=on,wait=off", p.display());
        let binary = std::env::var_os("QEMU").unwrap_or_else(|| "qemu-system-x86_64".into());
        Command::new(binary)
            .args([
                "-machine",
                "none",
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
            ])
            .args([
                "-qmp",
                &qmp(&a.to_path_buf()),
                "-qmp",
                &qmp(&b.to_path_buf()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(QemuGuard)
    }
}

impl Drop for QemuGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
