//! The guide's migration test: migrate `migration_iterations` times over
//! `migration_mode`, logging in after each.
//!
//! ```sh
//! cargo test --example migration -- -p migration_mode=unix
//! ```

use virtest::prelude::*;

#[derive(Default)]
struct Migration;

impl VirtTest for Migration {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        let mode = t.params.get_or("migration_mode", MigrationMode::Tcp)?;
        for _ in 0..t.params.get_or("migration_iterations", 4)? {
            t.vm.migrate(mode).await?;
            t.vm.login_remote().await?;
        }
        Ok(())
    }

    async fn cleanup(&mut self, t: &mut Test) -> TestResult {
        t.vm.remote()?.run("shutdown -h now").await?;
        t.vm.power_off().await?;
        Ok(())
    }
}

virtest::main!(Migration);
