//! Where a test panicked: a panic hook keeps the last panic's message and
//! location per thread, for the FAIL reason.

use std::cell::RefCell;
use std::sync::Once;

thread_local! {
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the hook once; it keeps the previous hook's output.
pub(crate) fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = payload_text(info.payload());
            let text = match info.location() {
                Some(at) => format!("panicked at {}:{}: {message}", at.file(), at.line()),
                None => format!("panicked: {message}"),
            };
            LAST.with(|last| *last.borrow_mut() = Some(text));
            previous(info);
        }));
    });
}

/// The panic just caught on this thread, described.
pub(crate) fn describe(payload: &(dyn std::any::Any + Send)) -> String {
    LAST.with(|last| last.borrow_mut().take())
        .unwrap_or_else(|| format!("panicked: {}", payload_text(payload)))
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".into())
}
