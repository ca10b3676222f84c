//! What the reader task and the command senders share: the commands
//! waiting for replies, the lines to write, the event log.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::event::EventLog;
use crate::transcript::TranscriptWriter;

/// A reply waiting to be delivered: the command's name and where to send it.
pub(super) type Waiter = (String, oneshot::Sender<Result<Value>>);

/// What the reader and the command senders share.
pub(super) struct Shared {
    /// Pending commands by sequence number (their id, when ids are sent).
    pub(super) pending: Mutex<Pending>,
    /// Whether commands carry ids (out-of-band mode) or replies come in order.
    pub(super) send_ids: AtomicBool,
    pub(super) events: Arc<EventLog>,
    pub(super) transcript: Option<TranscriptWriter>,
    /// Becomes true once the reader has stopped.
    pub(super) reader_stopped: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    /// Stops waiting for the reply to `id` (the command gave up on it).
    pub(super) fn forget(&self, id: u64) {
        self.pending
            .lock()
            .expect("pending lock")
            .waiters
            .remove(&id);
    }

    /// Ends the connection: every pending command gets `reason`, and
    /// waits on events end.
    pub(super) fn close(&self, reason: String) {
        let waiters = {
            let mut pending = self.pending.lock().expect("pending lock");
            if pending.closed.is_none() {
                pending.closed = Some(reason.clone());
            }
            pending.outbox.clear();
            std::mem::take(&mut pending.waiters)
        };
        for (_, (_, tx)) in waiters {
            let _ = tx.send(Err(Error::Disconnected {
                reason: reason.clone(),
            }));
        }
        self.events.close();
    }
}

#[derive(Default)]
pub(super) struct Pending {
    pub(super) waiters: BTreeMap<u64, Waiter>,
    /// Command lines queued for the next write.
    pub(super) outbox: Vec<u8>,
    /// Set once the connection ended, with why.
    pub(super) closed: Option<String>,
}
