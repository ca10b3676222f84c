//! Where log lines go: every event to the job's `job.log`, and those
//! inside a test's span also to that test's `debug.log`. The same layer
//! follows what each test's VM is doing (booting, migrating 43 %...) for
//! the progress display.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The name of the span each test runs in; its `key` field finds its sink.
pub(crate) const TEST_SPAN: &str = "virtest_test";

/// What the display says a test is doing.
pub(crate) type Phase = Arc<Mutex<String>>;

/// A test's `debug.log` and phase.
#[derive(Clone)]
pub(crate) struct TestSink {
    pub log: Arc<Mutex<File>>,
    pub phase: Phase,
}

/// The layer: `job.log`, and each test's sink by its key.
pub(crate) struct LogLayer {
    job: Mutex<File>,
    tests: Sinks,
}

/// The test sinks, by key; the runner registers each before its span.
#[derive(Clone, Default)]
pub(crate) struct Sinks(Arc<Mutex<HashMap<u64, TestSink>>>);

impl Sinks {
    /// Makes the test span with `key` log to `sink`.
    pub(crate) fn register(&self, key: u64, sink: TestSink) {
        self.0.lock().expect("sinks").insert(key, sink);
    }

    fn get(&self, key: u64) -> Option<TestSink> {
        self.0.lock().expect("sinks").get(&key).cloned()
    }
}

impl LogLayer {
    /// The layer writing to `job_log`, and the handle to register sinks.
    pub(crate) fn new(job_log: File) -> (LogLayer, Sinks) {
        let sinks = Sinks::default();
        let layer = LogLayer {
            job: Mutex::new(job_log),
            tests: sinks.clone(),
        };
        (layer, sinks)
    }
}

/// The fields of a span, as text, kept in its extensions.
struct SpanFields(String);

/// A VM span's `vm` field: which VM of the test.
struct VmName(String);

/// The phase a span set, and the one it replaced.
struct PhaseMark {
    phase: Phase,
    before: String,
}

impl<S> Layer<S> for LogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = FieldText::default();
        attrs.record(&mut fields);
        let name = attrs.metadata().name();
        if name == TEST_SPAN {
            if let Some(sink) = fields.key.and_then(|key| self.tests.get(key)) {
                span.extensions_mut().insert(sink);
            }
        } else if let Some(vm) = fields.vm.clone() {
            span.extensions_mut().insert(VmName(vm));
        } else if let Some(phase) = fields.phase.clone()
            && let Some(sink) = test_sink(&ctx, id)
        {
            // In a test of several VMs, a phase says whose it is.
            let vm = span
                .scope()
                .skip(1)
                .find_map(|ancestor| ancestor.extensions().get::<VmName>().map(|n| n.0.clone()));
            let phase = match vm {
                Some(vm) if vm != "vm" => format!("{vm}: {phase}"),
                _ => phase,
            };
            let before = std::mem::replace(&mut *sink.phase.lock().expect("phase"), phase);
            span.extensions_mut().insert(PhaseMark {
                phase: sink.phase.clone(),
                before,
            });
        }
        span.extensions_mut().insert(SpanFields(fields.text));
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(mark) = span.extensions_mut().remove::<PhaseMark>()
        {
            *mark.phase.lock().expect("phase") = mark.before;
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let wanted = if meta.target().starts_with("virtest") {
            *meta.level() <= Level::DEBUG
        } else {
            *meta.level() <= Level::INFO
        };
        if !wanted {
            return;
        }
        let mut fields = FieldText::default();
        event.record(&mut fields);
        let mut scope = String::new();
        let mut sink = None;
        if let Some(spans) = ctx.event_scope(event) {
            for span in spans.from_root() {
                let extensions = span.extensions();
                if let Some(found) = extensions.get::<TestSink>() {
                    sink = Some(found.clone());
                    continue;
                }
                if !scope.is_empty() {
                    scope.push(':');
                }
                scope.push_str(span.name());
                if let Some(SpanFields(f)) = extensions.get::<SpanFields>()
                    && !f.is_empty()
                {
                    let _ = write!(scope, "{{{}}}", f.trim());
                }
            }
        }
        if let (Some(sink), Some(progress)) = (&sink, fields.progress) {
            *sink.phase.lock().expect("phase") = format!("migrating {progress:.0} %");
        }
        let scope = if scope.is_empty() {
            scope
        } else {
            format!("[{scope}] ")
        };
        let line = format!(
            "{} {:<5} {scope}{}: {}{}\n",
            clock(),
            meta.level(),
            meta.target(),
            fields.message,
            fields.text
        );
        if let Some(sink) = sink {
            let _ = sink.log.lock().expect("log").write_all(line.as_bytes());
        }
        let _ = self.job.lock().expect("job log").write_all(line.as_bytes());
    }
}

/// The sink of the test span above `id`, if any.
fn test_sink<S>(ctx: &Context<'_, S>, id: &Id) -> Option<TestSink>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let span = ctx.span(id)?;
    span.scope()
        .find_map(|s| s.extensions().get::<TestSink>().cloned())
}

/// Collects `message`, the test key, a progress figure, and the rest.
#[derive(Default)]
struct FieldText {
    message: String,
    text: String,
    key: Option<u64>,
    progress: Option<f64>,
    /// A VM span's `vm` field: the VM's name.
    vm: Option<String>,
    /// A span's `phase` field: the VM's phase it stands for.
    phase: Option<String>,
}

impl Visit for FieldText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            if field.name() == "phase" {
                self.phase = Some(format!("{value:?}"));
            }
            let _ = write!(self.text, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            match field.name() {
                "phase" => self.phase = Some(value.to_string()),
                "vm" => self.vm = Some(value.to_string()),
                _ => {}
            }
            let _ = write!(self.text, " {}={value}", field.name());
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "key" {
            self.key = Some(value);
        }
        let _ = write!(self.text, " {}={value}", field.name());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "progress" {
            self.progress = Some(value);
        }
        let _ = write!(self.text, " {}={value:.1}", field.name());
    }
}

/// The time of day, UTC, to the millisecond.
fn clock() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let day = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day / 3600,
        day / 60 % 60,
        day % 60,
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// The phase a test shows while `power_on` of a VM named `vm_name`
    /// runs.
    fn phase_while_booting(vm_name: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let (layer, sinks) = LogLayer::new(File::create(dir.path().join("job.log")).unwrap());
        let phase = Phase::default();
        sinks.register(
            1,
            TestSink {
                log: Arc::new(Mutex::new(
                    File::create(dir.path().join("debug.log")).unwrap(),
                )),
                phase: phase.clone(),
            },
        );
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let test = tracing::info_span!(TEST_SPAN, key = 1u64);
            let _test = test.enter();
            // Span names are the layers' own: only the fields count.
            let vm = tracing::info_span!("any_name", vm = vm_name, id = "abc");
            let _vm = vm.enter();
            let _booting = tracing::info_span!("another", phase = "booting").entered();
            let booting = phase.lock().unwrap().clone();
            drop(_booting);
            let not_a_phase = tracing::info_span!("power_on").entered();
            assert_eq!(
                *phase.lock().unwrap(),
                "",
                "a span without `phase` is no phase"
            );
            drop(not_a_phase);
            booting
        })
    }

    #[test]
    fn a_phase_names_its_vm_when_the_test_has_several() {
        assert_eq!(phase_while_booting("vm"), "booting");
        assert_eq!(phase_while_booting("server"), "server: booting");
    }
}
