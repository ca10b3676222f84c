//! Before a job: the guests its tests use, made ready with progress on
//! stderr, so no test spends its timeout on them. The default guest is
//! built when it never was; images given by URL are downloaded into the
//! cache; secrets that other users can read are made private. What is
//! wrong in a guest's description is said here, once for the job.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use virtest_guest::description::{Arch, DiskSource};
use virtest_guest::snapshots::SnapshotStore;
use virtest_guest::{bootstrap, cache, guests, images};

use super::{Planned, RunError};

/// Readies every guest the planned tests name.
pub(super) async fn prepare(planned: &[Planned]) -> Result<(), RunError> {
    let mut specs: Vec<&str> = planned
        .iter()
        .map(|p| p.params.get_str("guest").unwrap_or(guests::DEFAULT))
        .collect();
    specs.sort_unstable();
    specs.dedup();
    let home = cache::default_home().map_err(RunError::Guest)?;
    // A store that cannot be read is each test's warning to give (its
    // VMs boot instead), not a reason to run none.
    if let Err(e) = SnapshotStore::in_cache(&home).tidy() {
        tracing::warn!(error = %e, "the snapshot store cannot be tidied");
    }
    for spec in specs {
        if let Some(arch) = bootstrap::default_guest_arch(spec)
            && guests::is_unbuilt(spec, &home)
        {
            build_default_guest(home.clone(), arch).await?;
        }
        // A guest that does not load is the tests' error to report.
        let Ok((guest, warnings)) = guests::load(spec) else {
            continue;
        };
        for warning in warnings {
            eprintln!("warning: {warning}");
            tracing::warn!("{warning}");
        }
        for disk in &guest.disks {
            if let DiskSource::Url { url, sha256 } = &disk.source
                && !images::cached_path(&home, url, sha256).is_file()
            {
                let (home, url, sha256) = (home.clone(), url.clone(), sha256.clone());
                tokio::task::spawn_blocking(move || {
                    let mut bar = DownloadBar::new(&url);
                    let fetched =
                        images::fetch(&home, &url, &sha256, &mut |got, total| bar.show(got, total));
                    bar.finish(fetched.is_ok());
                    fetched
                })
                .await
                .expect("fetching does not panic")
                .map_err(RunError::Guest)?;
            }
        }
    }
    Ok(())
}

/// Builds a default guest (of `arch`), which a fresh machine lacks, so
/// that no separate bootstrap step is needed.
async fn build_default_guest(home: std::path::PathBuf, arch: Arch) -> Result<(), RunError> {
    let name = bootstrap::default_guest_name(arch);
    eprintln!(
        "virtest: building the guest `{name}` into {} (once)...",
        home.display()
    );
    let started = Instant::now();
    let built = tokio::task::spawn_blocking(move || {
        bootstrap::bootstrap(&bootstrap::BootstrapOptions::for_arch(home, arch)?)
    })
    .await
    .expect("bootstrap does not panic")
    .map_err(RunError::Guest)?;
    eprintln!(
        "virtest: built the guest `{name}` in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        built.manifest.dir.display()
    );
    Ok(())
}

/// A download's progress on stderr: one line redrawn on a terminal,
/// else a line at each quarter.
struct DownloadBar {
    url: String,
    terminal: bool,
    started: Instant,
    drawn: Instant,
    quarter: u64,
}

impl DownloadBar {
    fn new(url: &str) -> DownloadBar {
        eprintln!("virtest: downloading {url} into the image cache");
        DownloadBar {
            url: url.to_string(),
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            drawn: Instant::now(),
            quarter: 0,
        }
    }

    fn show(&mut self, got: u64, total: Option<u64>) {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let line = match total {
            Some(total) if total > 0 => format!(
                "{:6.1} / {:.1} MiB {:3}%",
                mib(got),
                mib(total),
                got * 100 / total
            ),
            _ => format!("{:6.1} MiB", mib(got)),
        };
        if self.terminal {
            if self.drawn.elapsed() >= Duration::from_millis(100) {
                self.drawn = Instant::now();
                eprint!("\r  {line}");
                let _ = std::io::stderr().flush();
            }
        } else if let Some(total) = total.filter(|t| *t > 0)
            && got * 4 / total > self.quarter
        {
            self.quarter = got * 4 / total;
            eprintln!("  {line}");
        }
    }

    fn finish(&self, ok: bool) {
        if self.terminal {
            eprintln!();
        }
        let how = if ok {
            "downloaded and verified"
        } else {
            "download failed"
        };
        eprintln!(
            "virtest: {how}: {} ({:.1} s)",
            self.url,
            self.started.elapsed().as_secs_f64()
        );
    }
}
