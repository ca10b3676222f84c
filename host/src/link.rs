//! [`Link`]: a simulated host's veth link to the lab's switch, and the
//! faults made on it: a rate (`tbf`, both ways), a share of packets
//! lost (nftables `numgen random`, both ways), a delay (`netem`, where
//! the kernel has it), and a cut (`ip link set down`).

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::lab::Namespace;

/// The nftables table the loss rules live in, in the host's namespace.
const LOSS_TABLE: &str = "virtest_link";

/// The faults a link has now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Its rate each way, if limited (Mbit/s).
    pub rate_mbit_s: Option<u32>,
    /// The share of packets lost each way (%).
    pub loss_percent: f64,
    /// The delay each way, if any (ms).
    pub delay_ms: Option<u32>,
    /// Whether it is cut.
    pub down: bool,
}

impl Faults {
    /// The faults as `(name, value)` figures for a report, prefixed with
    /// `prefix` (`destination_link`): only those set.
    pub fn figures(&self, prefix: &str) -> Vec<(String, f64)> {
        let mut figures = Vec::new();
        if let Some(rate) = self.rate_mbit_s {
            figures.push((format!("{prefix}_rate_mbit_s"), f64::from(rate)));
        }
        if self.loss_percent > 0.0 {
            figures.push((format!("{prefix}_loss_percent"), self.loss_percent));
        }
        if let Some(delay) = self.delay_ms {
            figures.push((format!("{prefix}_delay_ms"), f64::from(delay)));
        }
        figures
    }
}

/// A simulated host's link. Faults stay until changed or cleared.
#[derive(Debug, Clone)]
pub struct Link {
    host: String,
    /// Its faults now, shared by its clones.
    faults: Arc<Mutex<Faults>>,
    /// The host's namespace, where its end (`eth0`) is.
    namespace: Arc<Namespace>,
    /// The switch's namespace, where the other end is.
    switch: Arc<Namespace>,
    /// The switch's end.
    switch_side: String,
}

/// Links are equal when they are the same host's.
impl PartialEq for Link {
    fn eq(&self, other: &Link) -> bool {
        Arc::ptr_eq(&self.namespace, &other.namespace)
    }
}

impl Eq for Link {}

impl Link {
    pub(crate) fn new(
        host: &str,
        namespace: Arc<Namespace>,
        switch: Arc<Namespace>,
        switch_side: String,
    ) -> Link {
        Link {
            host: host.to_string(),
            faults: Arc::default(),
            namespace,
            switch,
            switch_side,
        }
    }

    /// Limits the link to `mbit_per_s` each way (a token bucket on both
    /// ends, its burst 10 ms of the rate).
    pub async fn limit_rate(&self, mbit_per_s: u32) -> Result<()> {
        if mbit_per_s == 0 {
            return Err(Error::Unsupported {
                what: "a rate of 0 Mbit/s".into(),
                why: "cut the link instead (`Link::down`)".into(),
            });
        }
        let rate = format!("{mbit_per_s}mbit");
        let burst = (u64::from(mbit_per_s) * 1_000_000 / 8 / 100).max(16_000);
        let burst = format!("{burst}b");
        for (namespace, device) in self.ends() {
            namespace
                .run(&[
                    "tc", "qdisc", "replace", "dev", device, "root", "tbf", "rate", &rate, "burst",
                    &burst, "latency", "100ms",
                ])
                .await?;
        }
        self.note(|f| f.rate_mbit_s = Some(mbit_per_s));
        Ok(())
    }

    /// Its faults now.
    pub fn faults(&self) -> Faults {
        *self.faults.lock().expect("faults lock")
    }

    fn note(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.faults.lock().expect("faults lock"));
    }

    /// Drops `percent` of the packets each way, at random.
    pub async fn lose(&self, percent: f64) -> Result<()> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(Error::Unsupported {
                what: format!("a loss of {percent} %"),
                why: "a share is between 0 and 100 %".into(),
            });
        }
        self.clear_loss().await?;
        self.note(|f| f.loss_percent = 0.0);
        let rule = match (percent * 100.0).round() as u32 {
            0 => return Ok(()),
            10000.. => "drop".to_string(),
            per_10000 => format!("numgen random mod 10000 < {per_10000} drop"),
        };
        let script = format!(
            "table inet {LOSS_TABLE} {{\n\
             chain input {{ type filter hook input priority 0; policy accept; {rule}; }}\n\
             chain output {{ type filter hook output priority 0; policy accept; {rule}; }}\n\
             }}\n"
        );
        self.namespace.run(&["nft", &script]).await?;
        self.note(|f| f.loss_percent = percent);
        Ok(())
    }

    /// Delays each packet by `ms` each way, where the kernel has `netem`;
    /// else the error says so.
    pub async fn delay(&self, ms: u32) -> Result<()> {
        let delay = format!("{ms}ms");
        for (namespace, device) in self.ends() {
            let added = namespace
                .run(&[
                    "tc", "qdisc", "replace", "dev", device, "root", "netem", "delay", &delay,
                ])
                .await;
            if let Err(Error::Lab { said, .. }) = &added
                && said.contains("qdisc kind is unknown")
            {
                return Err(Error::Unsupported {
                    what: format!("a delay of {ms} ms"),
                    why: "this kernel has no `netem` qdisc (module sch_netem); a kernel with it adds delay and jitter".into(),
                });
            }
            added?;
        }
        self.note(|f| f.delay_ms = Some(ms));
        Ok(())
    }

    /// Cuts the link: the host is unreachable until [`Link::up`].
    pub async fn down(&self) -> Result<()> {
        self.set(false).await
    }

    /// Cuts the link now and restores it after `down_for`, in a task of
    /// its own (the link comes back whatever else happens meanwhile).
    pub fn cut_for(&self, down_for: std::time::Duration) -> tokio::task::JoinHandle<Result<()>> {
        let link = self.clone();
        tokio::spawn(async move {
            link.down().await?;
            tokio::time::sleep(down_for).await;
            link.up().await
        })
    }

    /// Restores a cut link.
    pub async fn up(&self) -> Result<()> {
        self.set(true).await
    }

    /// Removes every fault: rate, delay, loss, and a cut.
    pub async fn clear(&self) -> Result<()> {
        for (namespace, device) in self.ends() {
            // Deleting the root qdisc where there is none fails: fine.
            let _ = namespace
                .run(&["tc", "qdisc", "del", "dev", device, "root"])
                .await;
        }
        self.clear_loss().await?;
        self.note(|f| *f = Faults::default());
        self.set(true).await
    }

    /// The qdiscs on both ends, as `tc` shows them (for reports).
    pub async fn describe(&self) -> Result<String> {
        let mut text = String::new();
        for (namespace, device) in self.ends() {
            text += &namespace
                .run(&["tc", "qdisc", "show", "dev", device])
                .await?;
        }
        Ok(text)
    }

    async fn clear_loss(&self) -> Result<()> {
        let tables = self.namespace.run(&["nft", "list", "tables"]).await?;
        if tables.contains(LOSS_TABLE) {
            self.namespace
                .run(&["nft", "delete", "table", "inet", LOSS_TABLE])
                .await?;
        }
        Ok(())
    }

    async fn set(&self, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        tracing::info!(host = %self.host, state, "link");
        self.switch
            .run(&["ip", "link", "set", &self.switch_side, state])
            .await?;
        self.note(|f| f.down = !up);
        Ok(())
    }

    /// Both ends: the host's, and the switch's.
    fn ends(&self) -> [(&Namespace, &str); 2] {
        [(&self.namespace, "eth0"), (&self.switch, &self.switch_side)]
    }
}
