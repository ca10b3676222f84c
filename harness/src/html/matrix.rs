//! A migration matrix as a grid: when a job's variants vary
//! `migration_feature` (their names say so), a row per feature and a
//! column per transport and QEMU pair, each cell its status with the migration's total time and
//! downtime (from the cell's `migration-1.json`), a SKIP's reason on hover.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use virtest_migration::MigrationReport;

use crate::results::{JobResults, TestRecord, escape};

/// The grid, or nothing when fewer than two of the job's variants vary
/// `migration_feature`.
pub(super) fn grid(results: &JobResults) -> String {
    let cells: Vec<(&TestRecord, String, String)> = results
        .tests
        .iter()
        .filter(|test| test.name.contains("migration_feature="))
        .filter_map(|test| {
            let feature = test.params.get("migration_feature")?.clone();
            Some((test, feature, column(test)))
        })
        .collect();
    let rows: Vec<&str> = {
        let mut seen = Vec::new();
        for (_, feature, _) in &cells {
            if !seen.contains(&feature.as_str()) {
                seen.push(feature.as_str());
            }
        }
        seen
    };
    let columns: BTreeSet<&str> = cells.iter().map(|(_, _, column)| column.as_str()).collect();
    if cells.len() < 2 {
        return String::new();
    }
    let mut out = String::from(
        "<h2>Migration matrix</h2>\n<table class=\"matrix\"><thead><tr><th>feature</th>",
    );
    for column in &columns {
        let _ = write!(out, "<th>{}</th>", escape(column));
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in rows {
        let _ = write!(out, "<tr><th>{}</th>", escape(row));
        for column in &columns {
            let cell = cells
                .iter()
                .find(|(_, feature, c)| feature == row && c == column);
            out.push_str(&match cell {
                Some((test, _, _)) => cell_html(test),
                None => "<td></td>".to_string(),
            });
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
    out
}

/// A cell's column: its transport and QEMUs (`tcp · 7.2 → 10.0`).
fn column(test: &TestRecord) -> String {
    let param = |key: &str, unset: &str| {
        test.params
            .get(key)
            .cloned()
            .unwrap_or_else(|| unset.to_string())
    };
    let source = param("qemu_bin", "host");
    let destination = test
        .params
        .get("qemu_dst_bin")
        .cloned()
        .unwrap_or_else(|| source.clone());
    format!(
        "{} · {source} → {destination}",
        param("migration_mode", "tcp")
    )
}

fn cell_html(test: &TestRecord) -> String {
    let report: Option<MigrationReport> = std::fs::read(test.logdir.join("migration-1.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let figures = match report {
        Some(r) => format!(
            "<br><span class=\"figures\">{} ms, down {} ms</span>",
            r.total_time_ms, r.downtime_ms
        ),
        None => String::new(),
    };
    let title = escape(test.fail_reason.as_deref().unwrap_or(&test.name));
    format!(
        "<td title=\"{title}\"><span class=\"status {status}\">{status}</span>{figures}</td>",
        status = test.status
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::record_for_tests;
    use crate::status::Status;

    fn cell(feature: &str, mode: &str, status: Status, reason: Option<&str>) -> TestRecord {
        let mut test = record_for_tests(status, reason);
        test.name = format!("m@migration_feature={feature},migration_mode={mode}");
        test.params
            .insert("migration_feature".into(), feature.into());
        test.params.insert("migration_mode".into(), mode.into());
        test.params.insert("qemu_bin".into(), "7.2".into());
        test.params.insert("qemu_dst_bin".into(), "10.0".into());
        test.logdir = "/nonexistent".into();
        test
    }

    #[test]
    fn a_row_per_feature_a_column_per_transport_and_pair() {
        let cells = vec![
            cell("precopy", "tcp", Status::Pass, None),
            cell("precopy", "exec", Status::Pass, None),
            cell("multifd", "tcp", Status::Pass, None),
            cell("multifd", "exec", Status::Skip, Some("needs a <socket>")),
        ];
        let results = JobResults::new("j", "/r/job.log".into(), 0.0, cells);
        let html = grid(&results);
        assert!(html.contains("<tr><th>precopy</th>") && html.contains("<tr><th>multifd</th>"));
        assert_eq!(
            html.matches("<tr><th>").count(),
            3,
            "a header and two rows: {html}"
        );
        assert!(
            html.contains("<th>exec · 7.2 → 10.0</th><th>tcp · 7.2 → 10.0</th>"),
            "{html}"
        );
        assert!(html.contains("title=\"needs a &lt;socket&gt;\""), "{html}");
        assert_eq!(html.matches("status SKIP").count(), 1);
        let mut plain = record_for_tests(Status::Pass, None);
        plain
            .params
            .insert("migration_feature".into(), "precopy".into());
        let plain = vec![plain; 3];
        assert!(grid(&JobResults::new("j", "/r/job.log".into(), 0.0, plain)).is_empty());
    }
}
