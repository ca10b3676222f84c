//! `migration_matrix`: one cell of a migration matrix, a variant per
//! cell. It migrates the guest once over `migration_mode` under
//! `migration_feature`, between the QEMUs `qemu_bin` and `qemu_dst_bin`
//! name, while a writer in the guest stamps pages of a tmpfs file; after
//! it, the stamps must be as the writer left them (a lost write shows as a
//! stale page) and the guest the same one. A cell its QEMU or transport
//! cannot do is SKIP with the reason; a feature that must fail
//! (`tls-wrong-hostname`) passes when it fails cleanly.
//!
//! ```sh
//! printf 'migration_mode = ["tcp", "unix"]\nmigration_feature = ["precopy", "multifd"]\n' > m.toml
//! virtest run migration_matrix --params-file m.toml
//! ```

use crate::builtin::boot_id;
use crate::harness::params;
use crate::migration::{Error as MigrationError, Feature};
use crate::prelude::*;

/// The pages the writer stamps: 4 MiB of the guest's tmpfs.
const PAGES: u32 = 1024;

/// The guest's file of pages, one 4096-byte line each.
const PAGES_FILE: &str = "/dev/shm/virtest-pages";

/// One cell of a migration matrix.
pub struct MigrationMatrix;

impl VirtTest for MigrationMatrix {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        let feature = t.params.value(&params::MIGRATION_FEATURE)?;
        let mode = t.params.value(&params::MIGRATION_MODE)?;
        let mut spec = t.vm.migration_defaults();
        spec.mode = mode;
        feature.apply(&mut spec)?;
        if let Err(e) = spec.validate() {
            return Err(skip(format!("{feature} over {mode}: {e}")));
        }
        t.vm.power_on().await?;
        if let Some(missing) = missing_capability(&t.vm, feature).await? {
            return Err(skip(missing));
        }
        t.vm.login_remote().await?;
        let boot = boot_id(t).await?;
        start_writer(t).await?;
        let before = stamps(t).await?;
        let migrated = t.vm.migrate_with(&spec).await;
        match (migrated, feature.must_fail()) {
            (Ok(report), false) => {
                let statuses: Vec<&str> =
                    report.timeline.iter().map(|s| s.status.as_str()).collect();
                t.log(format_args!(
                    "{feature} over {mode}, QEMU {} to {} on {}: {} ms, downtime {} ms; {}",
                    report.source_qemu,
                    report.destination_qemu,
                    report.machine_type,
                    report.total_time_ms,
                    report.downtime_ms,
                    statuses.join(" > ")
                ));
            }
            (Err(e @ MigrationError::UnknownCapability { .. }), _)
            | (Err(e @ MigrationError::Unsupported { .. }), _) => {
                return Err(skip(format!("{feature} over {mode}: {e}")));
            }
            (Err(e), false) => return Err(e.into()),
            (Ok(_), true) => {
                return Err(fail(format!("{feature} must fail, and the guest migrated")));
            }
            (Err(e), true) => {
                t.log(format_args!(
                    "{feature} over {mode} failed, as it must: {e}"
                ));
                let cancelled = matches!(e, MigrationError::Cancelled { .. });
                ensure!(
                    cancelled == feature.cancels() && !matches!(e, MigrationError::Timeout { .. }),
                    "{feature} failed otherwise than it must: {e}"
                );
                ensure!(t.vm.is_on(), "the source ended with the failed migration");
                // The source is as it was: a plain migration goes on.
                let mut plain = t.vm.migration_defaults();
                plain.mode = mode;
                let report = t.vm.migrate_with(&plain).await?;
                t.log(format_args!(
                    "then plain over {mode}: {} ms, downtime {} ms",
                    report.total_time_ms, report.downtime_ms
                ));
            }
        }
        t.vm.login_remote().await?;
        ensure!(
            boot_id(t).await? == boot,
            "after the migration another guest answered"
        );
        let after = check_pages(t).await?;
        t.log(format_args!(
            "pages: {before} before the migration, {after} after it"
        ));
        ensure!(
            after != before,
            "the writer did not run on across the migration ({before} before and after)"
        );
        Ok(())
    }
}

/// Why the VM's QEMU cannot do `feature`, from its own list of
/// capabilities (`query-migrate-capabilities`).
async fn missing_capability(vm: &Vm, feature: Feature) -> Result<Option<String>, TestError> {
    let needed = feature.capabilities();
    if needed.is_empty() {
        return Ok(None);
    }
    let offered = vm
        .qmp()?
        .execute_raw("query-migrate-capabilities", serde_json::Value::Null)
        .await?;
    let has = |name: &str| {
        offered
            .as_array()
            .is_some_and(|list| list.iter().any(|c| c["capability"] == name))
    };
    let version = vm
        .instance()?
        .qmp()
        .execute_raw("query-version", serde_json::Value::Null)
        .await?;
    let version = format!(
        "{}.{}.{}",
        version["qemu"]["major"], version["qemu"]["minor"], version["qemu"]["micro"]
    );
    Ok(needed
        .iter()
        .find(|name| !has(name))
        .map(|name| format!("QEMU {version} offers no `{name}` capability, which {feature} needs")))
}

/// Starts the writer: it stamps each page of the file with its pass
/// number, page after page, pass after pass, until stopped.
async fn start_writer(t: &Test) -> TestResult {
    let script = format!(
        "line=$(printf '%4095s' '' | tr ' ' '.'); i=0; \
         while [ $i -lt {PAGES} ]; do echo \"$line\"; i=$((i+1)); done > {PAGES_FILE}; \
         setsid sh -c 'pass=0; while :; do pass=$((pass+1)); p=0; \
           while [ $p -lt {PAGES} ]; do \
             printf %08d $pass | dd of={PAGES_FILE} bs=4096 seek=$p conv=notrunc 2>/dev/null; \
             p=$((p+1)); \
           done; \
         done' </dev/null >/dev/null 2>&1 & echo $! > /run/virtest-writer.pid; sleep 1"
    );
    t.vm.remote()?.run(&script).await?;
    Ok(())
}

/// The stamps as they are now, in short: the pass and page the writer
/// is at.
async fn stamps(t: &Test) -> Result<String, TestError> {
    summarize(t, false).await
}

/// The awk program that reads the pages' stamps, one per line, and says
/// `pass P up to page N` when each page before N holds the first page's
/// pass and each from N on one less (the writer is at N), or `pass P on
/// every page`; else `BAD` and the pages that hold another stamp. A page
/// that was never stamped reads 0.
const CHECK: &str = "\
    { v = $1 + 0 } \
    NR == 1 { top = v } \
    NR > 1 && v != prev { \
      if (v == prev - 1 && at == 0) at = NR - 1; \
      else bad = bad \" page \" NR - 1 \" holds \" v \" after \" prev; \
    } \
    { prev = v } \
    END { \
      if (bad != \"\") print \"BAD\" bad; \
      else if (at == 0) print \"pass \" top \" on every page\"; \
      else print \"pass \" top \" up to page \" at \
    }";

/// Stops the writer and checks its pages: every page holds the pass
/// before it or, up to where the writer stopped, one more.
async fn check_pages(t: &Test) -> Result<String, TestError> {
    summarize(t, true).await
}

/// Reads the pages' stamps (stopping the writer first with `stop`): what
/// [`CHECK`] says, or an error naming the pages that hold another stamp.
async fn summarize(t: &Test, stop: bool) -> Result<String, TestError> {
    let stop = match stop {
        true => "kill -STOP $(cat /run/virtest-writer.pid); ",
        false => "",
    };
    let script = format!("{stop}cut -c1-8 {PAGES_FILE} | awk '{CHECK}'");
    let out = t.vm.remote()?.run(&script).await?;
    let summary = out.stdout.trim().to_string();
    match summary.strip_prefix("BAD") {
        Some(bad) => Err(fail(format!(
            "the guest's pages are not as its writer left them:{bad}"
        ))),
        None => Ok(summary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`CHECK`] says of `stamps`, run by the host's awk.
    fn check(stamps: &[u32]) -> String {
        use std::io::Write;
        let mut awk = std::process::Command::new("awk")
            .arg(CHECK)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines: String = stamps.iter().map(|s| format!("{s:08}\n")).collect();
        awk.stdin
            .take()
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();
        let out = awk.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn pages_as_the_writer_leaves_them_pass_and_a_stale_one_is_named() {
        assert_eq!(check(&[5, 5, 5, 5]), "pass 5 on every page");
        assert_eq!(check(&[5, 5, 4, 4]), "pass 5 up to page 2");
        assert_eq!(check(&[1, 1, 0, 0]), "pass 1 up to page 2", "a first pass");
        assert_eq!(
            check(&[5, 3, 5, 5]),
            "BAD page 1 holds 3 after 5 page 2 holds 5 after 3"
        );
        assert_eq!(check(&[5, 4, 4, 3]), "BAD page 3 holds 3 after 4");
    }
}
