//! The failure bundle: what a failed test's VM shows before cleanup (its
//! screen, the console's tail, the QMP events, and the guest's own view
//! through its session), saved in `failure/` beside the test's logs.
//! Gathering is bounded in time and size, and never changes the status:
//! a piece that cannot be had is named in `failure/missing.txt`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;
use virtest_remote::RunOptions;
use virtest_vm::Vm;

use crate::test::Test;

/// The bundle's directory, in the test's.
pub(crate) const DIR: &str = "failure";

/// The longest one piece may take (a screendump, one guest command), so
/// one that hangs leaves time for the others.
const PIECE_TIMEOUT: Duration = Duration::from_secs(10);

/// Console lines kept.
const CONSOLE_LINES: usize = 200;

/// QMP events kept, the newest.
const EVENTS: usize = 1000;

/// Bytes kept of each guest command's output.
const OUTPUT_BYTES: usize = 64 << 10;

/// What the guest is asked, in order (a guest without systemd answers
/// the journal's with "not found").
const GUEST_VIEW: &[&str] = &[
    "dmesg | tail -n 100",
    "journalctl -n 100 --no-pager",
    "ip addr",
    "df -h",
];

/// Gathers the bundle of each of `t`'s VMs into `failure/` (an added
/// VM's into `failure/vm-NAME/`) of the test's directory `dir`, all
/// within `budget`; returns the files.
pub(crate) async fn gather_all(t: &mut Test, dir: &Path, budget: Duration) -> Vec<PathBuf> {
    if budget.is_zero() {
        return Vec::new();
    }
    let deadline = Instant::now() + budget;
    let mut files = Vec::new();
    for (name, vm) in t.vms_mut() {
        let mut bundle = dir.join(DIR);
        if name != "vm" {
            bundle.push(format!("vm-{name}"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        files.extend(gather(vm, &bundle, left).await);
    }
    files
}

/// Gathers `vm`'s bundle into `dir` within `budget` and returns the
/// files it holds (none when the VM never started a QEMU).
async fn gather(vm: &mut Vm, dir: &Path, budget: Duration) -> Vec<PathBuf> {
    if !vm.has_started_qemu() {
        return Vec::new();
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "no failure bundle: its directory cannot be made");
        return Vec::new();
    }
    tracing::info!(dir = %dir.display(), "gathering the failure bundle");
    let mut missing = Vec::new();
    let deadline = Instant::now() + budget;
    let live = tokio::time::timeout_at(deadline, from_the_vm(vm, dir, deadline, &mut missing));
    if live.await.is_err() {
        missing.push(
            "the rest: gathering ran out of time (the evidence_timeout parameter)".to_string(),
        );
    }
    recorded(vm, dir, &mut missing).await;
    if !missing.is_empty() {
        for piece in &missing {
            tracing::warn!("failure bundle: no {piece}");
        }
        save(
            dir,
            "missing.txt",
            (missing.join("\n") + "\n").as_bytes(),
            &mut Vec::new(),
        );
    }
    files_in(dir)
}

/// What QEMU and the guest show: the screen, then the guest's view.
async fn from_the_vm(vm: &mut Vm, dir: &Path, deadline: Instant, missing: &mut Vec<String>) {
    if !vm.is_on() {
        let why = match vm.qemu_exit() {
            Some(exit) => exit.to_string(),
            None => "the VM is off".into(),
        };
        missing.push(format!("screen.png, guest.txt: {why}"));
        return;
    }
    let screen = dir.join("screen.png");
    let time = piece_time(deadline);
    match tokio::time::timeout(time, vm.screendump(&screen)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => missing.push(format!("screen.png: {e}")),
        Err(_) => missing.push(format!(
            "screen.png: QEMU did not answer `screendump` within {time:.1?}"
        )),
    }
    match guest_view(vm, deadline).await {
        Ok(view) => save(dir, "guest.txt", view.as_bytes(), missing),
        Err(why) => missing.push(format!("guest.txt: {why}")),
    }
}

/// What the VM layer recorded, which cannot hang: the console's tail and
/// the QMP events, taken last so they hold everything up to the end.
async fn recorded(vm: &mut Vm, dir: &Path, missing: &mut Vec<String>) {
    match vm.console() {
        Ok(console) => {
            let tail = console.tail(CONSOLE_LINES) + "\n";
            save(dir, "console-tail.txt", tail.as_bytes(), missing);
        }
        Err(e) => missing.push(format!("console-tail.txt: {e}")),
    }
    match vm.files().recorded_events().await {
        Ok(events) => {
            let newest = &events[events.len().saturating_sub(EVENTS)..];
            let lines: String = newest.iter().map(|event| format!("{event}\n")).collect();
            save(dir, "events.jsonl", lines.as_bytes(), missing);
        }
        Err(e) => missing.push(format!("events.jsonl: {e}")),
    }
}

/// The guest's answers to [`GUEST_VIEW`], each under its command and
/// followed by its exit status: through the test's session (or a new
/// one, when the test had none or a migration ended it), else through
/// the guest agent (when the guest's network is down, say).
async fn guest_view(vm: &mut Vm, deadline: Instant) -> Result<String, String> {
    let no_ssh = match guest_view_by_ssh(vm, deadline).await {
        Ok(view) => return Ok(view),
        Err(why) => why,
    };
    guest_view_by_agent(vm, deadline, &no_ssh)
        .await
        .map_err(|no_agent| format!("{no_ssh}; {no_agent}"))
}

/// [`GUEST_VIEW`] through the test's session, or a new one.
async fn guest_view_by_ssh(vm: &mut Vm, deadline: Instant) -> Result<String, String> {
    if vm.remote().is_err() {
        vm.within(piece_time(deadline))
            .login_remote()
            .await
            .map_err(|e| format!("no session into the guest: {e}"))?;
    }
    let session = vm.remote().map_err(|e| e.to_string())?;
    let mut view = String::new();
    for command in GUEST_VIEW {
        let options = RunOptions {
            check: false,
            timeout: piece_time(deadline),
            ..RunOptions::default()
        };
        let _ = writeln!(view, "$ {command}");
        match session.run_with(command, &options).await {
            Ok(result) => {
                view.push_str(&bounded(&result.stdout));
                view.push_str(&bounded(&result.stderr));
                let _ = writeln!(view, "[exit {}]\n", result.exit_status);
            }
            Err(e) => {
                let _ = writeln!(view, "[not run: {e}]");
                return if view.lines().count() > 2 {
                    Ok(view)
                } else {
                    Err(format!("the session does not answer: {e}"))
                };
            }
        }
    }
    Ok(view)
}

/// [`GUEST_VIEW`] run by the guest agent, headed by why SSH was not used.
async fn guest_view_by_agent(
    vm: &mut Vm,
    deadline: Instant,
    no_ssh: &str,
) -> Result<String, String> {
    let agent = vm
        .within(piece_time(deadline))
        .agent()
        .await
        .map_err(|e| format!("no guest agent either: {e}"))?;
    let first_line = no_ssh.lines().next().unwrap_or(no_ssh);
    let mut view = format!("# through the guest agent: {first_line}\n\n");
    for command in GUEST_VIEW {
        let _ = writeln!(view, "$ {command}");
        match agent
            .exec(&["/bin/sh", "-c", command], piece_time(deadline))
            .await
        {
            Ok(done) => {
                view.push_str(&bounded(&String::from_utf8_lossy(&done.stdout)));
                view.push_str(&bounded(&String::from_utf8_lossy(&done.stderr)));
                let _ = match (done.exit_code, done.signal) {
                    (Some(code), _) => writeln!(view, "[exit {code}]\n"),
                    (None, signal) => writeln!(view, "[ended by signal {signal:?}]\n"),
                };
            }
            Err(e) => {
                let _ = writeln!(view, "[not run: {e}]");
                return Ok(view);
            }
        }
    }
    Ok(view)
}

/// The time one piece may take: [`PIECE_TIMEOUT`], or what is left.
fn piece_time(deadline: Instant) -> Duration {
    PIECE_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()))
}

/// `text`'s last [`OUTPUT_BYTES`], ending in a newline when not empty.
fn bounded(text: &str) -> String {
    let mut start = text.len().saturating_sub(OUTPUT_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let mut kept = String::new();
    if start > 0 {
        let _ = writeln!(kept, "[... {start} bytes cut]");
    }
    kept.push_str(&text[start..]);
    if !kept.is_empty() && !kept.ends_with('\n') {
        kept.push('\n');
    }
    kept
}

fn save(dir: &Path, name: &str, bytes: &[u8], missing: &mut Vec<String>) {
    if let Err(e) = crate::results::write_atomic(&dir.join(name), bytes) {
        missing.push(format!("{name}: {e}"));
    }
}

/// The files in `dir`: pictures first (GitLab links only a test's first
/// attachment), then by name.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect();
    files.sort_by_key(|path| (path.extension() != Some("png".as_ref()), path.clone()));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_output_keeps_its_end() {
        assert_eq!(bounded(""), "");
        assert_eq!(bounded("ok"), "ok\n");
        let long = "é".repeat(OUTPUT_BYTES);
        let kept = bounded(&long);
        assert!(kept.starts_with("[... "), "{}", &kept[..40]);
        assert!(kept.len() < OUTPUT_BYTES + 40);
        assert!(kept.ends_with("é\n"));
    }
}
