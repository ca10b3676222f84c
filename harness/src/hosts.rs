//! The hosts of a test: [`Test::add_host`](crate::Test::add_host) makes
//! simulated ones on this machine (a [`Lab`], made at the first), or
//! reaches the real ones a `hosts.toml` names (parameter `hosts`).

use std::path::Path;

use virtest_host::{Error as HostError, Host, HostsFile, Lab};

use crate::outcome::TestError;
use crate::status::Status;

/// The hosts a test added, by name, and where they come from.
#[derive(Default)]
pub(crate) struct TestHosts {
    /// The real hosts' file, when the parameters name one.
    file: Option<HostsFile>,
    /// The simulated hosts' switch, once one is made.
    lab: Option<Lab>,
    added: Vec<(String, Host)>,
}

impl TestHosts {
    /// Hosts from `file`, when given, else simulated.
    pub(crate) fn new(file: Option<&Path>) -> Result<TestHosts, TestError> {
        Ok(TestHosts {
            file: file.map(HostsFile::load).transpose()?,
            ..TestHosts::default()
        })
    }

    /// Host `name`: the one added before, else a new one, its files
    /// under `dir`.
    pub(crate) async fn add(&mut self, name: &str, dir: &Path) -> Result<Host, TestError> {
        if let Some((_, host)) = self.added.iter().find(|(added, _)| added == name) {
            return Ok(host.clone());
        }
        let host = match &self.file {
            Some(file) => file.connect(name, dir).await?,
            None => self.lab(dir).await?.add_host(name).await?,
        };
        tracing::info!(host = name, address = ?host.address(), "added a host");
        self.added.push((name.to_string(), host.clone()));
        Ok(host)
    }

    /// The test's own host, as the other hosts reach it.
    pub(crate) fn local(&self) -> Host {
        match (&self.file, &self.lab) {
            (Some(file), _) => file.local(),
            (None, Some(lab)) => lab.local(),
            (None, None) => Host::local(),
        }
    }

    async fn lab(&mut self, dir: &Path) -> Result<&Lab, TestError> {
        if self.lab.is_none() {
            let lab = Lab::new(&dir.join("hosts"))
                .await
                .map_err(|error| match error {
                    HostError::NeedsRoot { .. } => TestError::new(Status::Skip, error.to_string()),
                    other => other.into(),
                })?;
            self.lab = Some(lab);
        }
        Ok(self.lab.as_ref().expect("made above"))
    }
}
