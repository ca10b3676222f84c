//! Disks copied live to a destination that does not see the source's
//! storage, the way libvirt's copy-storage migration does it. The
//! destination QEMU starts with new overlays over copies of the disks'
//! bases (virtest-vm places them) and exports them over NBD, on its
//! host's address. The source mirrors the data of its own overlays into
//! them (`blockdev-mirror`, `sync: top`: the bases are the same on both
//! sides). RAM moves once every mirror is in sync (`READY`), with
//! `pause-before-switchover` on: at the switch-over the source's guest is
//! stopped, each mirror is ended in sync (`block-job-cancel` of a ready
//! mirror leaves the target a copy as of that moment), and only then
//! does the destination take over. The switch-over's wait counts in the
//! downtime QEMU reports. A migration under TLS copies the disks under
//! the same credentials.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use virtest_qmp::Qmp;

use crate::error::{Error, Result};
use crate::setup::TlsIds;

/// The ports tried for the destination's NBD server: outside Linux's
/// ephemeral range, so that no outgoing connection holds one.
const NBD_PORTS: std::ops::Range<u16> = 61000..65000;

/// How many ports are tried before giving up.
const PORT_TRIES: usize = 8;

/// Mirrors of the source's disks into the destination's, running.
#[derive(Debug)]
pub(crate) struct DiskCopy {
    /// The drives copied (their `-drive` ids, the same on both sides).
    drives: Vec<String>,
    /// When the first mirror started.
    started: Instant,
    /// The bytes the mirrors copied until they were in sync.
    bytes: u64,
    /// How long until every mirror was in sync.
    in_sync_after: Duration,
}

/// The prefix of a mirror's job id and its target's node name.
const JOB_PREFIX: &str = "vt-copy-";

/// A mirror's job id and its target's node name on the source.
fn job_of(drive: &str) -> String {
    format!("{JOB_PREFIX}{drive}")
}

/// The drive of the mirror `job`.
fn drive_of(job: &str) -> String {
    job.trim_start_matches(JOB_PREFIX).to_string()
}

/// The job a block job event is about (`""` for none).
fn job_in(event: &virtest_qmp::Event) -> &str {
    event
        .data
        .get("device")
        .and_then(Value::as_str)
        .unwrap_or("")
}

impl DiskCopy {
    /// Exports the destination's `drives` over NBD on `address` (its
    /// host's), mirrors the source's into them, and waits within
    /// `within` until every mirror is in sync. On an error, what was
    /// started on the source is undone.
    pub(crate) async fn start(
        source: &Qmp,
        destination: &Qmp,
        address: &str,
        drives: &[String],
        tls: Option<&TlsIds>,
        within: Duration,
    ) -> Result<DiskCopy> {
        let mut copy = DiskCopy {
            drives: Vec::new(),
            started: Instant::now(),
            bytes: 0,
            in_sync_after: Duration::ZERO,
        };
        match copy
            .mirror(source, destination, address, drives, tls, within)
            .await
        {
            Ok(()) => Ok(copy),
            Err(error) => {
                copy.abandon(source, destination).await;
                Err(error)
            }
        }
    }

    async fn mirror(
        &mut self,
        source: &Qmp,
        destination: &Qmp,
        address: &str,
        drives: &[String],
        tls: Option<&TlsIds>,
        within: Duration,
    ) -> Result<()> {
        let copy = self;
        let port = start_nbd_server(destination, address, tls, within).await?;
        for drive in drives {
            let node = node_of(destination, drive, within).await?;
            let export = json!({
                "type": "nbd", "id": job_of(drive), "node-name": node,
                "name": drive, "writable": true,
            });
            qmp_step(
                destination,
                "destination",
                "block-export-add",
                export,
                within,
            )
            .await?;
        }
        qmp_step(
            source,
            "source",
            "migrate-set-capabilities",
            json!({ "capabilities": [{ "capability": "pause-before-switchover", "state": true }] }),
            within,
        )
        .await?;
        let mut events = source.subscribe();
        for drive in drives {
            let job = job_of(drive);
            let mut target = json!({
                "driver": "nbd", "node-name": job, "export": drive,
                "server": { "type": "inet", "host": address, "port": port.to_string() },
            });
            if let Some(tls) = tls {
                target["tls-creds"] = json!(tls.client);
                if !tls.hostname.is_empty() {
                    target["tls-hostname"] = json!(tls.hostname);
                }
            }
            qmp_step(source, "source", "blockdev-add", target, within).await?;
            copy.drives.push(drive.clone());
            let mirror = json!({
                "job-id": job, "device": drive, "target": job, "sync": "top",
            });
            qmp_step(source, "source", "blockdev-mirror", mirror, within).await?;
        }
        let mut waiting: Vec<String> = drives.iter().map(|d| job_of(d)).collect();
        let deadline = tokio::time::Instant::now() + within;
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = events
                .next_within(left)
                .await
                .map_err(|source| Error::Qmp {
                    side: "source",
                    step: format!(
                        "waiting for the disks' mirrors to be in sync ({})",
                        waiting.join(", ")
                    ),
                    source,
                })?;
            let job = job_in(&event);
            if !waiting.iter().any(|w| w == job) {
                continue;
            }
            match event.name.as_str() {
                "BLOCK_JOB_READY" => {
                    copy.bytes += event.data.get("len").and_then(Value::as_u64).unwrap_or(0);
                    waiting.retain(|w| w != job);
                }
                "BLOCK_JOB_COMPLETED" | "BLOCK_JOB_CANCELLED" | "BLOCK_JOB_ERROR" => {
                    let said = event
                        .data
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("it ended");
                    return Err(Error::DiskCopy {
                        drive: drive_of(job),
                        reason: format!("its mirror stopped before it was in sync: {said}"),
                    });
                }
                _ => {}
            }
        }
        copy.in_sync_after = copy.started.elapsed();
        tracing::info!(
            drives = ?copy.drives,
            bytes = copy.bytes,
            elapsed = ?copy.in_sync_after,
            "disks in sync on the destination"
        );
        Ok(())
    }

    /// At the switch-over (the source's guest stopped): ends each mirror
    /// in sync, removes its target from the source and stops the
    /// destination's NBD server. Returns the copy's figures, for the
    /// report.
    pub(crate) async fn complete(
        &mut self,
        source: &Qmp,
        destination: &Qmp,
        within: Duration,
    ) -> Result<Vec<(String, f64)>> {
        let switching = Instant::now();
        let mut events = source.subscribe();
        for drive in &self.drives {
            let cancel = json!({ "device": job_of(drive) });
            qmp_step(source, "source", "block-job-cancel", cancel, within).await?;
        }
        let mut waiting: Vec<String> = self.drives.iter().map(|d| job_of(d)).collect();
        while !waiting.is_empty() {
            let event = events
                .next_within(within)
                .await
                .map_err(|source| Error::Qmp {
                    side: "source",
                    step: "waiting for the disks' mirrors to end in sync".into(),
                    source,
                })?;
            let job = job_in(&event);
            if !matches!(
                event.name.as_str(),
                "BLOCK_JOB_COMPLETED" | "BLOCK_JOB_CANCELLED"
            ) || !waiting.iter().any(|w| w == job)
            {
                continue;
            }
            if let Some(said) = event.data.get("error").and_then(Value::as_str) {
                return Err(Error::DiskCopy {
                    drive: drive_of(job),
                    reason: format!("its mirror failed as it ended: {said}"),
                });
            }
            waiting.retain(|w| w != job);
        }
        for drive in std::mem::take(&mut self.drives) {
            let node = json!({ "node-name": job_of(&drive) });
            qmp_step(source, "source", "blockdev-del", node, within).await?;
        }
        qmp_step(
            destination,
            "destination",
            "nbd-server-stop",
            json!({}),
            within,
        )
        .await?;
        let seconds = self.in_sync_after.as_secs_f64();
        let mib = self.bytes as f64 / (1 << 20) as f64;
        Ok(vec![
            ("disk_copy_mib".into(), mib),
            ("disk_copy_ms".into(), seconds * 1000.0),
            (
                "disk_copy_mib_s".into(),
                if seconds > 0.0 { mib / seconds } else { 0.0 },
            ),
            (
                "disk_switch_ms".into(),
                switching.elapsed().as_secs_f64() * 1000.0,
            ),
            (
                "disk_total_ms".into(),
                self.started.elapsed().as_secs_f64() * 1000.0,
            ),
        ])
    }

    /// After a failed migration: stops the destination's NBD server,
    /// which ends the mirrors' connections (a mirror waits for its
    /// writes in flight, which a slow link makes long), cancels the
    /// mirrors, and removes their targets once they are gone, so that the
    /// source's disks are as before.
    pub(crate) async fn abandon(self, source: &Qmp, destination: &Qmp) {
        let _ = destination
            .execute_raw_within("nbd-server-stop", json!({}), ABANDON)
            .await;
        for drive in &self.drives {
            let cancel = json!({ "device": job_of(drive), "force": true });
            let _ = source
                .execute_raw_within("block-job-cancel", cancel, ABANDON)
                .await;
        }
        let deadline = Instant::now() + ABANDON;
        for drive in &self.drives {
            let node = json!({ "node-name": job_of(drive) });
            // The job holds its target until it has ended.
            while source
                .execute_raw_within("blockdev-del", node.clone(), ABANDON)
                .await
                .is_err()
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How long cleaning up after a failure may take.
const ABANDON: Duration = Duration::from_secs(10);

/// Starts the destination's NBD server on `address`, on a free port of
/// [`NBD_PORTS`]; returns the port.
async fn start_nbd_server(
    destination: &Qmp,
    address: &str,
    tls: Option<&TlsIds>,
    within: Duration,
) -> Result<u16> {
    let mut last = None;
    for _ in 0..PORT_TRIES {
        let port =
            NBD_PORTS.start + (rand_u32() % u32::from(NBD_PORTS.end - NBD_PORTS.start)) as u16;
        let mut args = json!({
            "addr": { "type": "inet", "data": { "host": address, "port": port.to_string() } },
        });
        if let Some(tls) = tls {
            args["tls-creds"] = json!(tls.server);
        }
        match destination
            .execute_raw_within("nbd-server-start", args, within)
            .await
        {
            Ok(_) => return Ok(port),
            Err(error) if error.to_string().contains("in use") => last = Some(error),
            Err(source) => {
                return Err(Error::Qmp {
                    side: "destination",
                    step: format!("`nbd-server-start` on {address}:{port}"),
                    source,
                });
            }
        }
    }
    Err(Error::DiskCopy {
        drive: "*".into(),
        reason: format!(
            "no free port for the destination's NBD server on {address} after {PORT_TRIES} tries: {}",
            last.map_or_else(String::new, |e| e.to_string())
        ),
    })
}

/// The node name of the root of drive `drive` (`query-block`).
async fn node_of(qmp: &Qmp, drive: &str, within: Duration) -> Result<String> {
    let blocks = qmp_step(qmp, "destination", "query-block", json!({}), within).await?;
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .find(|block| block.get("device").and_then(Value::as_str) == Some(drive))
        .and_then(|block| block.pointer("/inserted/node-name"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::DiskCopy {
            drive: drive.into(),
            reason: "the destination QEMU has no such drive".into(),
        })
}

/// Runs `command` on `side`'s QMP.
async fn qmp_step(
    qmp: &Qmp,
    side: &'static str,
    command: &str,
    args: Value,
    within: Duration,
) -> Result<Value> {
    qmp.execute_raw_within(command, args, within)
        .await
        .map_err(|source| Error::Qmp {
            side,
            step: format!("`{command}`"),
            source,
        })
}

/// A random number, for a port to try (std's hasher keys are random).
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u32
}
