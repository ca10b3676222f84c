//! Before a job: the factor its tests' default timeouts are scaled by,
//! from how fast this host runs guests ([`crate::host_speed`]), put in
//! each test's parameters (so its results say which it had), and a loud
//! word when guests fall back to TCG.

use std::path::{Path, PathBuf};

use virtest_guest::{cache, guests};
use virtest_qemu_cmdline::accel::{Accel, Chosen};

use crate::host_speed::{self, RUNS, Target, TimeoutScale};
use crate::params;

use super::Planned;

/// Gives every test whose `timeout_scale` is `auto` the factor of the
/// QEMU and accelerator it asks for, measuring each once per cache.
pub(super) async fn resolve(planned: &mut [Planned]) {
    let mut scales: Vec<((Option<PathBuf>, Accel), f64)> = Vec::new();
    for plan in planned.iter_mut() {
        if !matches!(
            plan.params.value(&params::TIMEOUT_SCALE),
            Ok(TimeoutScale::Auto)
        ) {
            continue;
        }
        // A parameter that does not parse is the test's error to report.
        let qemu = match plan.params.value_if_set(&params::QEMU_BIN) {
            Ok(choice) => choice.and_then(|c| c.resolve().ok()),
            Err(_) => continue,
        };
        let Ok(accel) = plan.params.value(&params::ACCEL) else {
            continue;
        };
        let key = (qemu, accel);
        let scale = match scales.iter().find(|(k, _)| *k == key) {
            Some((_, scale)) => *scale,
            None => {
                let scale = scale_of(key.0.as_deref(), accel).await;
                scales.push((key, scale));
                scale
            }
        };
        plan.params
            .set(params::TIMEOUT_SCALE.name, scale.to_string());
    }
}

/// The factor for VMs of `qemu` under `asked`: measured, or kept from a
/// measure in the cache; 1 where nothing can be measured (said why).
async fn scale_of(qemu: Option<&Path>, asked: Accel) -> f64 {
    let qemu = qemu.map(Path::to_path_buf);
    let target =
        match tokio::task::spawn_blocking(move || Target::resolve(qemu.as_deref(), asked)).await {
            Ok(Ok(target)) => target,
            // The tests that start this QEMU say what is wrong with it.
            _ => return 1.0,
        };
    if asked == Accel::Auto && target.accel == Chosen::Tcg {
        say(&format!(
            "warning: guests run emulated (TCG), many times slower than under KVM: {}",
            target.reason
        ));
    }
    let Ok(home) = cache::default_home() else {
        return 1.0;
    };
    let speed = match host_speed::cached(&home, &target) {
        Some(speed) => speed,
        None if guests::is_unbuilt(guests::DEFAULT, &home) => {
            say(
                "note: default timeouts are not scaled to this host: the default guest, whose boot \
                 measures it, is not built (`virtest bootstrap`)",
            );
            return 1.0;
        }
        None => {
            say(&format!(
                "measuring how fast this host runs guests: {RUNS} boots of the default guest on \
                 {} ({}), once per cache",
                target.qemu.display(),
                target.accel.as_str()
            ));
            match host_speed::measure(&home, &target).await {
                Ok(speed) => speed,
                Err(e) => {
                    say(&format!(
                        "warning: default timeouts are not scaled: measuring this host failed: {e}"
                    ));
                    return 1.0;
                }
            }
        }
    };
    let scale = speed.scale();
    say(&format!(
        "timeouts: the default guest boots in {:.1} s here ({}, {}): default login, start and \
         migration timeouts x{scale} (`-p timeout_scale=off` keeps them as they are)",
        speed.boot().as_secs_f64(),
        target.qemu.display(),
        target.accel.as_str()
    ));
    scale
}

/// Says `line` on the terminal and in the job's log.
fn say(line: &str) {
    eprintln!("{line}");
    tracing::info!("{line}");
}
