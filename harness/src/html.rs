//! `results.html`: a job for people, in one self-contained file (no
//! network fetches, the screendumps inside it): the summary, a row per
//! test with its logs linked, a failed test's screen and console tail,
//! and each test's migrations drawn as a timeline (SVG) with their
//! figures; a migration matrix's cells as a grid (`matrix`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use virtest_migration::MigrationReport;

use crate::results::{JobResults, TestRecord, escape};
use crate::status::Status;

mod matrix;

/// The largest screendump embedded; a larger one is linked.
const MAX_EMBEDDED_PNG: u64 = 2 << 20;

/// The page for `results`, whose job directory is `job_dir`.
pub(crate) fn render(results: &JobResults, job_dir: &Path) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>virtest job {id}</title><style>{STYLE}</style></head><body>\n\
         <h1>virtest job {id}</h1>\n",
        id = escape(&results.job_id)
    );
    summary(&mut page, results);
    page.push_str(&matrix::grid(results));
    page.push_str(
        "<table class=\"tests\"><thead><tr><th>#</th><th>test</th><th>status</th>\
         <th>time</th><th>VM start</th><th>reason</th><th>params</th><th>logs</th>\
         </tr></thead><tbody>\n",
    );
    for test in &results.tests {
        row(&mut page, test, job_dir);
    }
    page.push_str("</tbody></table>\n</body></html>\n");
    page
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:4px 6px;\
text-align:left;vertical-align:top}th{background:#f4f4f4}.status{font-weight:bold;padding:1px 6px;\
border-radius:3px;color:#fff}.PASS{background:#2e7d32}.WARN{background:#b28704}.FAIL{background:#c62828}\
.ERROR{background:#8e24aa}.INTERRUPTED{background:#6d4c41}.SKIP,.CANCEL{background:#757575}\
.flaky{background:#ef6c00;color:#fff;padding:1px 5px;border-radius:3px;margin-left:4px}\
.params{font-size:12px;color:#555}pre{background:#111;color:#eee;padding:6px;overflow-x:auto;\
max-height:24em}.detail td{background:#fafafa}img.screen{max-width:720px;border:1px solid #999}\
.counts span{margin-right:1em}.incomplete{color:#c62828;font-weight:bold}\
table.matrix{width:auto;margin-bottom:1.5em}table.matrix td{text-align:center}\
.figures{font-size:12px;color:#555}.legend{font-size:12px;margin-top:0}.legend .key{display:inline-block;width:12px;height:12px;\
margin:0 4px 0 12px;vertical-align:middle}.legend .key:first-child{margin-left:0}";

fn summary(page: &mut String, results: &JobResults) {
    let counts = [
        (Status::Pass, results.pass),
        (Status::Fail, results.failures),
        (Status::Error, results.errors),
        (Status::Interrupted, results.interrupt),
        (Status::Warn, results.warn),
        (Status::Skip, results.skip),
        (Status::Cancel, results.cancel),
    ];
    page.push_str("<p class=\"counts\">");
    for (status, count) in counts {
        let _ = write!(
            page,
            "<span><span class=\"status {status}\">{status}</span> {count}</span>"
        );
    }
    if results.flaky > 0 {
        let _ = write!(
            page,
            "<span><span class=\"flaky\">FLAKY</span> {}</span>",
            results.flaky
        );
    }
    let _ = writeln!(
        page,
        "<span>{} tests in {:.1} s</span></p>",
        results.total, results.time
    );
    if !results.complete {
        let _ = writeln!(
            page,
            "<p class=\"incomplete\">Incomplete: {} of the {} planned tests have no result yet \
             (the job runs, or was killed).</p>",
            results.missing(),
            results.planned
        );
    }
    for repeat in &results.repeats {
        let _ = writeln!(
            page,
            "<p>{}: passed {} of {} runs</p>",
            escape(&repeat.name),
            repeat.passed,
            repeat.runs
        );
    }
}

fn row(page: &mut String, test: &TestRecord, job_dir: &Path) {
    let status = test.status;
    let flaky = match test.flaky {
        true => "<span class=\"flaky\">FLAKY</span>",
        false => "",
    };
    let retried = match test.retried.len() {
        0 => String::new(),
        n => format!("<br><small>after {n} failed run(s)</small>"),
    };
    let reason = test.fail_reason.as_deref().unwrap_or("");
    let reason = match reason.split_once('\n') {
        Some((first, rest)) => format!(
            "{}<details><summary>more</summary><pre>{}</pre></details>",
            escape(first),
            escape(rest)
        ),
        None => escape(reason),
    };
    let params = params(test);
    let logs: Vec<String> = ["debug.log", "console.log", "qmp.log", "qemu.log"]
        .iter()
        .filter(|name| test.logdir.join(name).is_file())
        .map(|name| link(job_dir, &test.logdir.join(name), name))
        .chain([link(job_dir, &test.logdir, "dir")])
        .collect();
    let _ = writeln!(
        page,
        "<tr id=\"{id}\"><td>{number}</td><td>{name}{flaky}{retried}</td>\
         <td><span class=\"status {status}\">{status}</span></td><td>{time:.2}&nbsp;s</td>\
         <td>{start}</td><td>{reason}</td><td class=\"params\">{params}</td><td>{logs}</td></tr>",
        id = escape(&test.id),
        number = escape(test.id.split('-').next().unwrap_or("")),
        name = escape(&test.name),
        time = test.time,
        start = escape(test.vm_start.as_deref().unwrap_or("")),
        logs = logs.join(" "),
    );
    let mut detail = String::new();
    evidence(&mut detail, test, job_dir);
    migrations(&mut detail, &test.logdir, "Migrations");
    for (vm, dir) in added_vms(&test.logdir) {
        migrations(&mut detail, &dir, &format!("Migrations of VM {vm}"));
    }
    if !detail.is_empty() {
        let _ = writeln!(
            page,
            "<tr class=\"detail\"><td></td><td colspan=\"7\">{detail}</td></tr>"
        );
    }
}

/// The test's parameters that differ from the defaults, and all of them
/// folded away.
fn params(test: &TestRecord) -> String {
    let line = |(key, value): (&String, &String)| format!("{}={}", escape(key), escape(value));
    let is_default = |key: &str, value: &str| {
        crate::params::KNOWN
            .iter()
            .any(|known| known.name() == key && known.default() == value)
    };
    let set: Vec<String> = test
        .params
        .iter()
        .filter(|(key, value)| !is_default(key, value))
        .map(line)
        .collect();
    let all: Vec<String> = test.params.iter().map(line).collect();
    format!(
        "{}<details><summary>all</summary>{}</details>",
        set.join("<br>"),
        all.join("<br>")
    )
}

/// A failed test's bundle: its screen shown, its console tail, links to
/// the rest.
fn evidence(out: &mut String, test: &TestRecord, job_dir: &Path) {
    if test.evidence.is_empty() {
        return;
    }
    out.push_str("<p><b>When it failed:</b> ");
    let bundle = test.logdir.join("failure");
    // `screen.png`, or `vm-server/screen.png` for an added VM's.
    let label = |file: &Path| {
        file.strip_prefix(&bundle)
            .unwrap_or(file)
            .display()
            .to_string()
    };
    let links: Vec<String> = test
        .evidence
        .iter()
        .map(|file| link(job_dir, file, &label(file)))
        .collect();
    out.push_str(&links.join(" "));
    out.push_str("</p>\n");
    for file in &test.evidence {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".png") {
            let small = std::fs::metadata(file).is_ok_and(|m| m.len() <= MAX_EMBEDDED_PNG);
            if let (true, Ok(bytes)) = (small, std::fs::read(file)) {
                let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                let _ = writeln!(
                    out,
                    "<img class=\"screen\" alt=\"the guest's screen when the test failed\" \
                     src=\"data:image/png;base64,{data}\">"
                );
            }
        } else if name == "console-tail.txt"
            && let Ok(text) = std::fs::read_to_string(file)
        {
            let _ = writeln!(
                out,
                "<details><summary>{}</summary><pre>{}</pre></details>",
                escape(&label(file)),
                escape(&text)
            );
        }
    }
}

/// The VMs a test added, by name, with their directories (`vm-NAME/`).
fn added_vms(test_dir: &Path) -> Vec<(String, PathBuf)> {
    let mut vms: Vec<(String, PathBuf)> = std::fs::read_dir(test_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let vm = name.strip_prefix("vm-")?.to_string();
            entry.path().is_dir().then(|| (vm, entry.path()))
        })
        .collect();
    vms.sort();
    vms
}

/// A VM's migrations (the `migration-<n>.json` in `dir`) under `title`:
/// a timeline and a table of figures.
fn migrations(out: &mut String, dir: &Path, title: &str) {
    let reports: Vec<(usize, MigrationReport)> = (1..)
        .map(|n| (n, dir.join(format!("migration-{n}.json"))))
        .take_while(|(_, path)| path.is_file())
        .filter_map(|(n, path)| {
            let bytes = std::fs::read(path).ok()?;
            Some((n, serde_json::from_slice(&bytes).ok()?))
        })
        .collect();
    if reports.is_empty() {
        return;
    }
    let _ = writeln!(out, "<p><b>{}</b></p>", escape(title));
    out.push_str(&timeline(&reports));
    out.push_str(&legend());
    out.push_str(
        "<table><tr><th>#</th><th>transport</th><th>total</th><th>downtime</th><th>setup</th>\
         <th>sent</th><th>throughput</th><th>RAM passes</th><th>wall</th></tr>\n",
    );
    for (n, report) in &reports {
        let _ = writeln!(
            out,
            "<tr><td>{n}</td><td>{}</td><td>{} ms</td><td>{} ms</td><td>{} ms</td>\
             <td>{:.1} MiB</td><td>{:.1} MiB/s</td><td>{}</td><td>{:.0} ms</td></tr>",
            report.mode,
            report.total_time_ms,
            report.downtime_ms,
            report.setup_time_ms,
            report.ram.transferred as f64 / f64::from(1 << 20),
            report.throughput_mib_s,
            report.ram.dirty_sync_count,
            report.wall_ms,
        );
    }
    out.push_str("</table>\n");
}

/// The phases a timeline's bars show, with their colours.
const PHASES: [(&str, &str); 3] = [
    ("setup", "#9e9e9e"),
    ("copying RAM", "#1e88e5"),
    ("downtime", "#e53935"),
];

/// What the timeline's colours mean.
fn legend() -> String {
    let keys: String = PHASES
        .iter()
        .map(|(phase, colour)| {
            format!("<span class=\"key\" style=\"background:{colour}\"></span>{phase}")
        })
        .collect();
    format!("<p class=\"legend\">{keys}</p>\n")
}

/// One bar per migration on a shared time axis: setup, the copy, the
/// downtime at its end ([`PHASES`]).
fn timeline(reports: &[(usize, MigrationReport)]) -> String {
    const LABEL: f64 = 90.0;
    const WIDTH: f64 = 600.0;
    const ROW: f64 = 22.0;
    let span = reports
        .iter()
        .map(|(_, r)| r.wall_ms)
        .fold(1.0_f64, f64::max);
    let x = |ms: f64| LABEL + ms / span * WIDTH;
    let height = ROW * reports.len() as f64 + 24.0;
    let mut svg = format!(
        "<svg class=\"timeline\" width=\"{}\" height=\"{height}\" role=\"img\" \
         aria-label=\"migration timeline\">",
        LABEL + WIDTH + 10.0
    );
    for (row, (n, report)) in reports.iter().enumerate() {
        let y = row as f64 * ROW + 2.0;
        let at = |status: &str| {
            report
                .timeline
                .iter()
                .find(|change| change.status == status)
                .map(|change| change.at_ms)
        };
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" font-size=\"12\">#{n} {}</text>",
            y + 14.0,
            report.mode
        );
        let setup = at("setup").unwrap_or(0.0);
        let active = at("active").unwrap_or(setup);
        let end = report
            .timeline
            .last()
            .map_or(report.wall_ms, |change| change.at_ms);
        let downtime = (report.downtime_ms as f64).min(end - active);
        let bar = |from: f64, to: f64, color: &str, what: &str| {
            format!(
                "<rect x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"16\" fill=\"{color}\">\
                 <title>{what}: {:.0} ms</title></rect>",
                x(from),
                (x(to) - x(from)).max(1.0),
                to - from
            )
        };
        let [setup_phase, copy_phase, downtime_phase] = PHASES;
        svg.push_str(&bar(setup, active, setup_phase.1, setup_phase.0));
        svg.push_str(&bar(active, end - downtime, copy_phase.1, copy_phase.0));
        svg.push_str(&bar(
            end - downtime,
            end,
            downtime_phase.1,
            downtime_phase.0,
        ));
    }
    let axis = ROW * reports.len() as f64 + 16.0;
    for tick in [0.0, span / 2.0, span] {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{axis}\" font-size=\"11\" text-anchor=\"middle\">{tick:.0} ms</text>",
            x(tick).clamp(LABEL + 15.0, LABEL + WIDTH - 15.0)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A link to `path`, relative to the job's directory when it is in it.
fn link(job_dir: &Path, path: &Path, text: &str) -> String {
    let target: PathBuf = match path.strip_prefix(job_dir) {
        Ok(relative) => relative.to_path_buf(),
        Err(_) => path.to_path_buf(),
    };
    format!(
        "<a href=\"{}\">{}</a>",
        escape(&target.display().to_string()),
        escape(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::record_for_tests;

    #[test]
    fn names_and_reasons_are_escaped_and_nothing_is_fetched() {
        let mut failed = record_for_tests(Status::Fail, Some("<script>alert(1)</script>\nmore"));
        failed.logdir = "/elsewhere/1-t".into();
        let results = JobResults::new("abc", "/j/job.log".into(), 0.0, vec![failed]);
        let page = render(&results, Path::new("/j"));
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("t&lt;&amp;&gt;"));
        for fetch in ["src=\"http", "href=\"http", "url(http", "<link", "<script"] {
            assert!(!page.contains(fetch), "{fetch} in {page}");
        }
    }
}
