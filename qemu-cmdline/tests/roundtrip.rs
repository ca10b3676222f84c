//! For generated command lines, parsing the rendered argv gives back the
//! same model: values with commas, spaces, `=` and any text, repeated
//! keys, flags, and options kept verbatim.

use std::ffi::OsString;

use proptest::prelude::*;
use virtest_qemu_cmdline::{Arg, FlagOption, Props, PropsOption, QemuCmdline, ValueOption};

fn text() -> impl Strategy<Value = String> {
    "[ -~é,=]{0,16}"
}

fn props(has_head: bool) -> impl Strategy<Value = Props> {
    let head = if has_head {
        "[^=]{0,10}".prop_map(Some).boxed()
    } else {
        Just(None).boxed()
    };
    let entry = ("[a-z][a-z0-9.+-]{0,8}", prop::option::of(text()));
    (head, prop::collection::vec(entry, 0..5)).prop_map(|(head, entries)| {
        let mut p = match head {
            Some(h) => Props::with_head(h),
            None => Props::new(),
        };
        for (key, value) in entries {
            match value {
                Some(v) => p.push(&key, v),
                None => p.push_flag(&key),
            };
        }
        p
    })
}

fn arg() -> impl Strategy<Value = Arg> {
    prop_oneof![
        prop::sample::select(PropsOption::ALL.to_vec())
            .prop_flat_map(|o| props(o.has_head()).prop_map(move |p| Arg::Props(o, p))),
        (prop::sample::select(ValueOption::ALL.to_vec()), text())
            .prop_map(|(o, v)| Arg::Value(o, v)),
        prop::sample::select(FlagOption::ALL.to_vec()).prop_map(Arg::Flag),
        (
            "-zz[a-z]{1,6}",
            prop::collection::vec("[a-z0-9:/.,=]{1,8}", 0..3)
        )
            .prop_map(|(name, values)| {
                Arg::Raw(
                    std::iter::once(name)
                        .chain(values)
                        .map(OsString::from)
                        .collect(),
                )
            }),
    ]
}

proptest! {
    #[test]
    fn parse_of_render_is_the_same_model(args in prop::collection::vec(arg(), 0..12)) {
        let model = QemuCmdline { binary: "qemu-system-x86_64".into(), args };
        let (parsed, warnings) = QemuCmdline::parse("qemu-system-x86_64", &model.to_args());
        prop_assert_eq!(&parsed, &model);
        let raw = model.args.iter().filter(|a| matches!(a, Arg::Raw(_))).count();
        prop_assert_eq!(warnings.len(), raw, "one warning per option kept verbatim");
    }

    #[test]
    fn display_text_parses_back_to_the_same_model(args in prop::collection::vec(arg(), 0..8)) {
        let model = QemuCmdline { binary: "/usr/bin/qemu-system-x86_64".into(), args };
        let (parsed, _) = QemuCmdline::parse_text(&model.display(), "other").unwrap();
        prop_assert_eq!(parsed, model);
    }
}
