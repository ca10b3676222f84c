//! QEMU's `key=value,...` property lists, as `-device`, `-netdev`,
//! `-chardev` and most options take them.
//!
//! A comma inside a value is written doubled (`path=/a,,b` is `/a,b`).
//! Some options take an implied first value without a key (the driver of
//! `-device virtio-net-pci,netdev=n0`); that is the list's `head`.

use std::fmt;

/// A property list: an optional implied first value, then `key=value` or
/// bare `key` entries, in order.
///
/// ```
/// use virtest_qemu_cmdline::Props;
/// let p = Props::parse("virtio-net-pci,netdev=n0,romfile=/a,,b", true);
/// assert_eq!(p.head(), Some("virtio-net-pci"));
/// assert_eq!(p.get("romfile"), Some("/a,b"));
/// assert_eq!(p.to_string(), "virtio-net-pci,netdev=n0,romfile=/a,,b");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Props {
    head: Option<String>,
    entries: Vec<(String, Option<String>)>,
}

impl Props {
    /// An empty list with this implied first value.
    pub fn with_head(head: impl Into<String>) -> Props {
        Props {
            head: Some(head.into()),
            entries: Vec::new(),
        }
    }

    /// An empty list without an implied first value.
    pub fn new() -> Props {
        Props::default()
    }

    /// Parses a list; with `has_head`, a first item without `=` is the
    /// implied value.
    pub fn parse(text: &str, has_head: bool) -> Props {
        let mut props = Props::default();
        for (i, item) in split_escaped(text).into_iter().enumerate() {
            if i == 0 && has_head && !item.contains('=') {
                props.head = Some(item);
                continue;
            }
            if i == 0 && item.is_empty() && text.is_empty() {
                continue;
            }
            match item.split_once('=') {
                Some((key, value)) => props
                    .entries
                    .push((key.to_string(), Some(value.to_string()))),
                None => props.entries.push((item, None)),
            }
        }
        props
    }

    /// The implied first value.
    pub fn head(&self) -> Option<&str> {
        self.head.as_deref()
    }

    /// Replaces the head, keeping the properties (`q35,smm=on` becomes
    /// `pc-q35-7.2,smm=on`).
    pub fn set_head(&mut self, head: impl Into<String>) -> &mut Props {
        self.head = Some(head.into());
        self
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value of `key` (`hostfwd` may repeat).
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _)| k == key)
            .filter_map(|(_, v)| v.as_deref())
    }

    /// Whether `key` is present, with or without a value.
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    /// Sets `key`, replacing its first value or appending it.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Props {
        let value = Some(value.into());
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
        self
    }

    /// Appends `key=value`, even if `key` is there already.
    pub fn push(&mut self, key: &str, value: impl Into<String>) -> &mut Props {
        self.entries.push((key.to_string(), Some(value.into())));
        self
    }

    /// Appends a bare `key` (a flag).
    pub fn push_flag(&mut self, key: &str) -> &mut Props {
        self.entries.push((key.to_string(), None));
        self
    }

    /// Every entry, in order.
    pub fn entries(&self) -> &[(String, Option<String>)] {
        &self.entries
    }

    /// Every entry, mutably.
    pub fn entries_mut(&mut self) -> &mut Vec<(String, Option<String>)> {
        &mut self.entries
    }

    /// The `id` entry.
    pub fn id(&self) -> Option<&str> {
        self.get("id")
    }
}

impl fmt::Display for Props {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            if !std::mem::take(&mut first) {
                f.write_str(",")?;
            }
            Ok(())
        };
        if let Some(head) = &self.head {
            sep(f)?;
            f.write_str(&escape(head))?;
        }
        for (key, value) in &self.entries {
            sep(f)?;
            f.write_str(key)?;
            if let Some(value) = value {
                write!(f, "={}", escape(value))?;
            }
        }
        Ok(())
    }
}

/// Doubles commas, as QEMU's option parser expects inside values.
pub fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// Splits on single commas; a doubled comma is a comma inside the item.
fn split_escaped(text: &str) -> Vec<String> {
    let mut items = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                items.last_mut().expect("never empty").push(',');
            } else {
                items.push(String::new());
            }
        } else {
            items.last_mut().expect("never empty").push(c);
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_and_spaces_in_values_round_trip() {
        let mut p = Props::with_head("file");
        p.set("id", "c0").set("path", "/tmp/a, b,,c/log");
        let text = p.to_string();
        assert_eq!(text, "file,id=c0,path=/tmp/a,, b,,,,c/log");
        assert_eq!(Props::parse(&text, true), p);
    }

    #[test]
    fn flags_empty_values_and_repeats_are_kept() {
        let p = Props::parse(
            "user,id=n0,hostfwd=tcp::1-:22,hostfwd=udp::2-:53,ipv6=,restrict",
            true,
        );
        assert_eq!(
            p.get_all("hostfwd").collect::<Vec<_>>(),
            ["tcp::1-:22", "udp::2-:53"]
        );
        assert_eq!(p.get("ipv6"), Some(""));
        assert!(p.has("restrict") && p.get("restrict").is_none());
        assert_eq!(
            p.to_string(),
            "user,id=n0,hostfwd=tcp::1-:22,hostfwd=udp::2-:53,ipv6=,restrict"
        );
    }

    #[test]
    fn without_a_head_the_first_item_is_an_entry() {
        let p = Props::parse("driver=qcow2,node-name=disk", false);
        assert_eq!(p.head(), None);
        assert_eq!(p.get("driver"), Some("qcow2"));
        let p = Props::parse("max,+avx2", true);
        assert_eq!((p.head(), p.has("+avx2")), (Some("max"), true));
        assert_eq!(Props::parse("", false), Props::new());
    }
}
