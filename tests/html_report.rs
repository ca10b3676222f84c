//! `results.html`, read by a real browser (headless Chromium): a job with
//! passing, failing, skipped and migrating tests shows each test and
//! status, the failed test's screen, and the migrations' timeline; the
//! page fetches nothing; `virtest results --open` gives its path.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use virtest::harness::params::ParamSources;
use virtest::harness::runner::{self, Filter, JobOptions};
use virtest::harness::{Status, TestDef};
use virtest::prelude::*;

/// Migrates its guest twice.
#[derive(Default)]
struct MigratesTwice;
impl VirtTest for MigratesTwice {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        for mode in [MigrationMode::Tcp, MigrationMode::Exec] {
            t.vm.migrate(mode).await?;
        }
        t.vm.login_remote().await?;
        Ok(())
    }
}

/// Migrates, then fails: a bundle and a timeline.
#[derive(Default)]
struct FailsAfterMigration;
impl VirtTest for FailsAfterMigration {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        t.vm.migrate(MigrationMode::Unix).await?;
        Err(fail("the service <web> did not answer"))
    }
}

#[derive(Default)]
struct SkipsItself;
impl VirtTest for SkipsItself {
    async fn action(&mut self, _t: &mut Test) -> TestResult {
        Err(skip("needs two hosts"))
    }
}

/// Chromium's command line, headless, with a profile of its own.
fn chromium(profile: &Path) -> Command {
    let mut command = Command::new("chromium");
    command
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.display()));
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_shows_the_job() {
    let _slots = common::guest_slots(2);
    common::guest();
    let tmp = tempfile::tempdir().unwrap();
    let defs = vec![
        TestDef::new("MigratesTwice", MigratesTwice::default),
        TestDef::new("FailsAfterMigration", FailsAfterMigration::default),
        TestDef::new("SkipsItself", SkipsItself::default),
    ];
    let (planned, _) = runner::plan(&defs, &ParamSources::default(), &Filter::default()).unwrap();
    let options = JobOptions {
        results_dir: tmp.path().join("results"),
        max_parallel: 2,
        ..JobOptions::new()
    };
    let job = runner::run_job(&defs, planned, &options).await.unwrap();
    let statuses: Vec<Status> = job.results.tests.iter().map(|t| t.status).collect();
    assert_eq!(statuses, [Status::Pass, Status::Fail, Status::Skip]);

    let page = job.dir.join("results.html");
    let html = std::fs::read_to_string(&page).unwrap();
    for fetch in [
        "src=\"http",
        "href=\"http",
        "url(",
        "<link",
        "<script",
        "@import",
    ] {
        assert!(!html.contains(fetch), "the page would fetch: {fetch}");
    }

    let dom = chromium(&tmp.path().join("profile"))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium is installed (.ci/install installs it)");
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    let xml = xml_of(&dom);
    let doc = roxmltree::Document::parse_with_options(
        &xml,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap();
    let row_text = |id: &str| -> String {
        let row = doc
            .descendants()
            .find(|n| n.has_tag_name("tr") && n.attribute("id") == Some(id))
            .unwrap_or_else(|| panic!("no row {id} in:\n{dom}"));
        row.descendants().filter_map(|n| n.text()).collect()
    };
    let migrates = row_text("1-migrates_twice");
    assert!(
        migrates.contains("migrates_twice") && migrates.contains("PASS"),
        "{migrates}"
    );
    let fails = row_text("2-fails_after_migration");
    assert!(
        fails.contains("FAIL") && fails.contains("the service <web> did not answer"),
        "{fails}"
    );
    let skips = row_text("3-skips_itself");
    assert!(
        skips.contains("SKIP") && skips.contains("needs two hosts"),
        "{skips}"
    );

    let screens: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("img"))
        .filter_map(|n| n.attribute("src"))
        .collect();
    assert_eq!(screens.len(), 1, "the failed test's screen");
    assert!(screens[0].starts_with("data:image/png;base64,"));
    let timelines = doc
        .descendants()
        .filter(|n| n.has_tag_name("svg") && n.attribute("class") == Some("timeline"))
        .count();
    assert_eq!(timelines, 2, "one per test that migrated");
    let bars: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect"))
        .filter_map(|n| n.attribute("fill"))
        .collect();
    assert_eq!(
        bars.len(),
        3 * 3,
        "setup, copy and downtime of each migration"
    );
    // Each timeline says what its colours mean, in the colours it uses.
    let legends: Vec<_> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("legend"))
        .collect();
    assert_eq!(legends.len(), 2, "one legend per timeline");
    for legend in legends {
        let text: String = legend.descendants().filter_map(|n| n.text()).collect();
        for phase in ["setup", "copying RAM", "downtime"] {
            assert!(text.contains(phase), "{phase} not in the legend: {text}");
        }
        let keys: Vec<&str> = legend
            .descendants()
            .filter_map(|n| n.attribute("style"))
            .filter_map(|style| style.strip_prefix("background:"))
            .collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        for colour in &bars {
            assert!(keys.contains(colour), "{colour} has no key in {keys:?}");
        }
    }

    // A picture of the page, to look at.
    let picture = job.dir.join("results.png");
    let shot = chromium(&tmp.path().join("profile"))
        .arg(format!("--screenshot={}", picture.display()))
        .arg("--window-size=1280,1400")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let png = std::fs::read(&picture).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    if let Some(keep) = std::env::var_os("VIRTEST_KEEP_REPORT_PICTURE") {
        std::fs::copy(&picture, PathBuf::from(keep)).unwrap();
    }

    let output = Command::new(env!("CARGO_BIN_EXE_virtest"))
        .args(["results", "--open", "--results-dir"])
        .arg(tmp.path().join("results"))
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()),
        std::fs::canonicalize(&page).unwrap()
    );
}

/// Chromium's DOM dump as XML an XML parser takes: void elements closed.
fn xml_of(dom: &str) -> String {
    let mut xml = dom.replace("<!DOCTYPE html>", "");
    for void in ["meta", "br", "img", "input"] {
        let mut out = String::new();
        let mut rest = xml.as_str();
        let open = format!("<{void}");
        while let Some(at) = rest.find(&open) {
            let end = at + rest[at..].find('>').unwrap();
            out.push_str(&rest[..end]);
            out.push_str(if rest[..end].ends_with('/') {
                ">"
            } else {
                "/>"
            });
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        xml = out;
    }
    xml.replace("&nbsp;", "\u{a0}")
}
