//! Timeouts that know the host: on a deliberately slowed host (QEMU
//! pinned to one CPU beside busy neighbours), a guest whose login
//! timeout fits this machine but not the slowed one passes, because the
//! job measured the slowed host and scaled the timeout; with the scaling
//! off it fails on that timeout. Each run says loudly when guests run
//! under TCG.

mod common;

use std::path::Path;
use std::process::{Child, Command};

use virtest::prelude::*;

/// Processes that spin on CPU 0 until dropped.
struct Neighbours(Vec<Child>);

impl Neighbours {
    fn spin(count: usize) -> Neighbours {
        Neighbours(
            (0..count)
                .map(|_| {
                    Command::new("taskset")
                        .args(["-c", "0", "sh", "-c", "while :; do :; done"])
                        .spawn()
                        .expect("taskset (util-linux) runs a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for Neighbours {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Removes the measures of QEMUs under `dir` from the cache.
fn forget_measures_under(dir: &Path) {
    let home = virtest::guest::cache::default_home().unwrap();
    let file = home.join("host-speed.json");
    let Ok(bytes) = std::fs::read(&file) else {
        return;
    };
    let mut all: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
    all.retain(|m| {
        !m["qemu"]
            .as_str()
            .unwrap_or("")
            .starts_with(&*dir.to_string_lossy())
    });
    std::fs::write(&file, serde_json::to_vec_pretty(&all).unwrap()).unwrap();
}

#[test]
fn a_slowed_host_passes_because_its_timeouts_were_scaled() {
    let _slots = common::guest_slots(2);
    common::guest();
    let dir = tempfile::tempdir().unwrap();
    // The slowed host: every QEMU of this binary on CPU 0, which three
    // busy loops share with it (its boot took 17 s here, against 4).
    let qemu = dir.path().join("qemu-system-x86_64");
    common::write_script(
        &qemu,
        "#!/bin/sh\nexec taskset -c 0 /usr/bin/qemu-system-x86_64 \"$@\"\n",
    );
    // A guest that logs in within 7 s here (its boot takes 3 to 5 s),
    // and not on the slowed host.
    let toml = common::write_guest_toml(dir.path(), "");
    let text = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("[login]\n", "[login]\ntimeout = 7\n");
    std::fs::write(&toml, text).unwrap();
    let _neighbours = Neighbours::spin(3);
    let guest = format!("guest={}", toml.display());
    let qemu_bin = format!("qemu_bin={}", qemu.display());
    let args = ["boot", "-p", &guest, "-p", &qemu_bin, "-p", "accel=auto"];

    let results = dir.path().join("scaled");
    let (output, json) = common::virtest_run(&args, &results);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let test = &json.tests[0];
    assert_eq!(
        test.status,
        Status::Pass,
        "{:?}\n{stderr}",
        test.fail_reason
    );
    let scale: f64 = test.params["timeout_scale"].parse().unwrap();
    assert!(
        scale >= 1.5,
        "a slowed host scaled by {scale} only\n{stderr}"
    );
    assert!(
        stderr.contains("measuring how fast this host runs guests"),
        "{stderr}"
    );
    assert!(
        stderr.contains("timeouts: the default guest boots in"),
        "{stderr}"
    );
    if stderr.contains(", tcg)") {
        assert!(
            stderr.contains("warning: guests run emulated (TCG)"),
            "{stderr}"
        );
    }

    // The same without the scaling: the guest's own 7 s is too short.
    let results = dir.path().join("unscaled");
    let mut unscaled = args.to_vec();
    unscaled.extend(["-p", "timeout_scale=off"]);
    let (output, json) = common::virtest_run(&unscaled, &results);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let test = &json.tests[0];
    assert_ne!(test.status, Status::Pass, "{stderr}");
    let reason = test.fail_reason.clone().unwrap_or_default();
    assert!(reason.contains("7s"), "{reason}");
    assert!(!stderr.contains("measuring how fast"), "{stderr}");
    forget_measures_under(dir.path());
}
