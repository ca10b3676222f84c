//! The README's table of parameters is the one the declarations make:
//! changing a default or a meaning in `harness/src/params/known.rs`
//! without the README fails here, with the table to paste. Its fleet
//! example is the code `tests/readme_fleet.rs` runs on both guests.

const START: &str = "<!-- parameters: ";
const END: &str = "<!-- end of parameters -->";

#[test]
fn the_readmes_parameter_table_is_generated_from_the_declarations() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find(START)
        .expect("the README marks its parameter table");
    let body = &readme[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let end = body.find(END).expect("the README ends its parameter table");
    let expected = virtest::harness::params::markdown_table();
    assert!(
        body[..end] == expected,
        "README.md's parameter table is out of date; replace it with \
         `cargo run -q -- list --parameters --markdown`:\n{expected}"
    );
}

/// Checks that the README shows, as a Rust block, the code of `source`
/// (the file `file`) between its `// README NAME begin` and `end` marks.
fn check_example(name: &str, file: &str, source: &str) {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let begin_mark = format!("// README {name} begin\n");
    let begin = source.find(&begin_mark).expect("marked") + begin_mark.len();
    let end = source
        .find(&format!("        // README {name} end"))
        .expect("marked");
    let snippet: String = source[begin..end]
        .lines()
        .map(|line| line.strip_prefix("        ").unwrap_or(line).to_string() + "\n")
        .collect();
    assert!(
        readme.contains(&format!("```rust\n{snippet}```")),
        "README.md's {name} example differs from {file}; show:\n{snippet}"
    );
}

#[test]
fn the_readmes_fleet_example_is_the_code_the_fleet_test_runs() {
    check_example(
        "fleet",
        "tests/readme_fleet.rs",
        include_str!("readme_fleet.rs"),
    );
}

#[test]
fn the_readmes_host_example_is_the_code_the_hosts_test_runs() {
    check_example("hosts", "tests/hosts.rs", include_str!("hosts.rs"));
}
