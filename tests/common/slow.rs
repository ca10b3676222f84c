//! A test that powers its VM on and then waits ten minutes (for a
//! timeout or a signal to end it), its cleanup marking that it ran.

use std::path::PathBuf;
use std::time::Duration;

use virtest::prelude::*;

/// Powers on, then sleeps for ten minutes; its cleanup calls
/// [`mark_cleanup`].
pub struct SlowAction;

impl VirtTest for SlowAction {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        tokio::time::sleep(Duration::from_secs(600)).await;
        Ok(())
    }
    async fn cleanup(&mut self, t: &mut Test) -> TestResult {
        mark_cleanup(t).await
    }
}

/// Where the cleanup of these tests leaves its mark.
pub fn cleanup_mark(t: &Test) -> PathBuf {
    t.log_dir().join("cleanup-ran")
}

/// Leaves [`cleanup_mark`] (holding QEMU's pid, 0 when off) and
/// powers the VM off.
pub async fn mark_cleanup(t: &mut Test) -> TestResult {
    std::fs::write(cleanup_mark(t), t.vm.pid().unwrap_or(0).to_string())?;
    t.vm.within(Duration::from_secs(2)).power_off().await?;
    Ok(())
}
