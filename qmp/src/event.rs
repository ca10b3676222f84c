//! Events: kept as JSON in a log with sequence numbers, so every
//! subscriber sees every event and a waiter can look back to a point it
//! chose before triggering the event.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use crate::error::{Error, Result};

/// How many events the log keeps for slow readers.
pub const LOG_CAPACITY: usize = 100_000;

/// One event, as QEMU sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its position in this connection's event log.
    pub seq: u64,
    /// The event name (`STOP`, `MIGRATION`, or one this crate does not know).
    pub name: String,
    /// Its `data` (`null` when it has none).
    pub data: Value,
    /// QEMU's timestamp as (seconds, microseconds), when sent.
    pub timestamp: Option<(i64, i64)>,
}

impl Event {
    /// The event as `qapi`'s typed enum, or `None` when the schema does
    /// not know it (a newer QEMU, an unknown enum value inside).
    pub fn typed(&self) -> Option<qapi::qmp::Event> {
        let (seconds, microseconds) = self.timestamp.unwrap_or_default();
        let data = if self.data.is_null() {
            Value::Object(Default::default())
        } else {
            self.data.clone()
        };
        let json = serde_json::json!({
            "event": self.name,
            "data": data,
            "timestamp": {"seconds": seconds, "microseconds": microseconds},
        });
        serde_json::from_value(json).ok()
    }

    /// Whether this is `name` and its data holds every key of `filter`
    /// with an equal value (`filter` may be `null` or `{}` for any).
    ///
    /// ```
    /// # use virtest_qmp::Event;
    /// let e = Event { seq: 0, name: "MIGRATION".into(), data: serde_json::json!({"status": "completed"}), timestamp: None };
    /// assert!(e.matches("MIGRATION", &serde_json::json!({"status": "completed"})));
    /// assert!(!e.matches("MIGRATION", &serde_json::json!({"status": "failed"})));
    /// ```
    pub fn matches(&self, name: &str, filter: &Value) -> bool {
        self.name == name && contains(&self.data, filter)
    }
}

/// Whether `value` holds everything in `filter` (objects by subset).
fn contains(value: &Value, filter: &Value) -> bool {
    match (value, filter) {
        (_, Value::Null) => true,
        (Value::Object(v), Value::Object(f)) => f
            .iter()
            .all(|(k, fv)| v.get(k).is_some_and(|vv| contains(vv, fv))),
        (v, f) => v == f,
    }
}

/// A point in the event log: waiting from a cursor sees every event that
/// arrived after the cursor was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCursor(pub(crate) u64);

/// The log shared by the reader (which appends) and readers.
#[derive(Debug)]
pub(crate) struct EventLog {
    events: Mutex<VecDeque<Event>>,
    /// The next sequence number; changes wake waiters. Closed when the
    /// connection ends.
    latest: watch::Sender<(u64, bool)>,
}

impl EventLog {
    pub(crate) fn new() -> EventLog {
        EventLog {
            events: Mutex::new(VecDeque::new()),
            latest: watch::channel((0, false)).0,
        }
    }

    /// Appends an event and wakes waiters.
    pub(crate) fn push(&self, name: String, data: Value, timestamp: Option<(i64, i64)>) -> Event {
        let mut events = self.events.lock().expect("event log lock");
        let seq = self.latest.borrow().0;
        let event = Event {
            seq,
            name,
            data,
            timestamp,
        };
        events.push_back(event.clone());
        if events.len() > LOG_CAPACITY {
            events.pop_front();
        }
        self.latest.send_modify(|(next, _)| *next = seq + 1);
        event
    }

    /// Marks the log as ended: no event will follow.
    pub(crate) fn close(&self) {
        self.latest.send_modify(|(_, closed)| *closed = true);
    }

    /// A cursor at the end of the log: later events only.
    pub(crate) fn cursor(&self) -> EventCursor {
        EventCursor(self.latest.borrow().0)
    }

    /// The first event at or after `cursor` that `pick` accepts, and the
    /// cursor after it; `Ok(None)` if none yet.
    fn find(
        &self,
        cursor: EventCursor,
        pick: &(dyn Fn(&Event) -> bool + Sync),
    ) -> Result<Option<(Event, EventCursor)>> {
        let events = self.events.lock().expect("event log lock");
        let first = events.front().map_or(self.latest.borrow().0, |e| e.seq);
        if cursor.0 < first {
            return Err(Error::Lagged {
                missed: first - cursor.0,
            });
        }
        let start = (cursor.0 - first) as usize;
        Ok(events
            .iter()
            .skip(start)
            .find(|e| pick(e))
            .map(|e| (e.clone(), EventCursor(e.seq + 1))))
    }

    /// Waits for an event `pick` accepts, from `cursor` on, until the
    /// deadline. Returns it with the cursor just after it.
    pub(crate) async fn wait(
        &self,
        cursor: EventCursor,
        what: &str,
        pick: &(dyn Fn(&Event) -> bool + Sync),
        deadline: Option<Duration>,
    ) -> Result<(Event, EventCursor)> {
        let mut rx = self.latest.subscribe();
        let wait = async {
            let mut cursor = cursor;
            loop {
                let (next, closed) = *rx.borrow_and_update();
                if let Some(found) = self.find(cursor, pick)? {
                    return Ok(found);
                }
                cursor = EventCursor(next.max(cursor.0));
                if closed {
                    return Err(Error::Disconnected {
                        reason: format!("the connection ended while waiting for {what}"),
                    });
                }
                if rx.changed().await.is_err() {
                    return Err(Error::Disconnected {
                        reason: format!("the connection ended while waiting for {what}"),
                    });
                }
            }
        };
        match deadline {
            None => wait.await,
            Some(after) => tokio::time::timeout(after, wait).await.unwrap_or_else(|_| {
                Err(Error::Timeout {
                    what: format!("waiting for {what}"),
                    after,
                })
            }),
        }
    }
}

/// A subscriber: sees every event from the moment it subscribed, in order.
#[derive(Debug)]
pub struct Subscription {
    pub(crate) log: std::sync::Arc<EventLog>,
    pub(crate) cursor: EventCursor,
}

impl Subscription {
    /// The next event; [`Error::Disconnected`] once the connection has
    /// ended and every event before that was read.
    pub async fn next(&mut self) -> Result<Event> {
        self.next_before(None).await
    }

    /// [`Subscription::next`] with a deadline.
    pub async fn next_within(&mut self, deadline: Duration) -> Result<Event> {
        self.next_before(Some(deadline)).await
    }

    async fn next_before(&mut self, deadline: Option<Duration>) -> Result<Event> {
        let (event, cursor) = self
            .log
            .wait(self.cursor, "the next event", &|_| true, deadline)
            .await?;
        self.cursor = cursor;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_wait_sees_an_event_that_came_before_it_began() {
        let log = EventLog::new();
        let cursor = log.cursor();
        log.push("STOP".into(), Value::Null, None);
        let (event, after) = log
            .wait(
                cursor,
                "STOP",
                &|e| e.name == "STOP",
                Some(Duration::from_secs(1)),
            )
            .await
            .unwrap();
        assert_eq!((event.seq, after), (0, EventCursor(1)));
        // From the cursor after it, the same event is not seen again.
        let err = log
            .wait(
                after,
                "STOP",
                &|e| e.name == "STOP",
                Some(Duration::from_millis(50)),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_closed_log_ends_waits() {
        let log = EventLog::new();
        log.close();
        let err = log
            .wait(log.cursor(), "STOP", &|_| true, None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Disconnected { .. }), "{err}");
    }

    #[test]
    fn filters_match_by_subset() {
        let data = json!({"status": "completed", "nested": {"a": 1, "b": 2}});
        assert!(contains(&data, &json!({"nested": {"a": 1}})));
        assert!(!contains(&data, &json!({"nested": {"a": 2}})));
        assert!(contains(&data, &Value::Null));
        assert!(!contains(&Value::Null, &json!({"status": "x"})));
    }

    #[test]
    fn typed_view_where_the_schema_knows_it() {
        let stop = Event {
            seq: 0,
            name: "STOP".into(),
            data: Value::Null,
            timestamp: Some((1, 2)),
        };
        assert!(matches!(stop.typed(), Some(qapi::qmp::Event::STOP { .. })));
        let unknown = Event {
            seq: 1,
            name: "NOT_YET_INVENTED".into(),
            data: json!({}),
            timestamp: None,
        };
        assert!(unknown.typed().is_none());
        let bad_enum = Event {
            seq: 2,
            name: "MIGRATION".into(),
            data: json!({"status": "teleporting"}),
            timestamp: None,
        };
        assert!(
            bad_enum.typed().is_none(),
            "an unknown enum value is no typed event, and no error"
        );
    }
}
