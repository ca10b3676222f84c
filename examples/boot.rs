//! The guide's boot test: power on, log in, shut down.
//!
//! ```sh
//! cargo test --example boot              # or: cargo nextest run
//! cargo run --example boot -- --list
//! ```

use virtest::prelude::*;

#[derive(Default)]
struct Boot;

impl VirtTest for Boot {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        t.vm.login_remote().await?;
        Ok(())
    }

    async fn cleanup(&mut self, t: &mut Test) -> TestResult {
        t.vm.remote()?.run("shutdown -h now").await?;
        t.vm.power_off().await?;
        Ok(())
    }
}

virtest::main!(Boot);
