//! `results.xml`: the job's results as JUnit XML, which Jenkins and
//! GitLab read, with retries as Maven Surefire writes them and failure
//! bundles as attachments.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{JobResults, escape};
use crate::status::Status;

impl JobResults {
    /// JUnit XML, as Jenkins and GitLab read it. A failed test's
    /// failure bundle is attached (`[[ATTACHMENT|path]]` lines in its
    /// `system-out`): absolute paths for Jenkins, relative to
    /// `$CI_PROJECT_DIR` under GitLab CI, where GitLab looks for them.
    pub fn junit(&self) -> String {
        self.junit_in(
            std::env::var_os("CI_PROJECT_DIR")
                .map(PathBuf::from)
                .as_deref(),
        )
    }

    /// [`JobResults::junit`], attachments relative to `project_dir` when
    /// they lie in it.
    fn junit_in(&self, project_dir: Option<&Path>) -> String {
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let failures = self.failures;
        let errors = self.errors + self.interrupt;
        let skipped = self.skip + self.cancel;
        let _ = writeln!(
            xml,
            "<testsuites name=\"virtest\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{:.3}\">",
            self.total, self.time
        );
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{:.3}\">",
            escape(&self.job_id),
            self.total,
            self.time
        );
        for test in &self.tests {
            let _ = write!(
                xml,
                "    <testcase classname=\"virtest\" name=\"{}\" time=\"{:.3}\">",
                escape(&test.name),
                test.time
            );
            let reason = escape(test.fail_reason.as_deref().unwrap_or(""));
            let status = test.status;
            match status {
                Status::Pass => {}
                Status::Warn => {
                    let _ = write!(
                        xml,
                        "<system-out>WARN: {}</system-out>",
                        escape(&test.whiteboard)
                    );
                }
                Status::Fail => {
                    let _ = write!(
                        xml,
                        "<failure type=\"{status}\" message=\"{reason}\">{reason}</failure>"
                    );
                }
                Status::Error | Status::Interrupted => {
                    let _ = write!(
                        xml,
                        "<error type=\"{status}\" message=\"{reason}\">{reason}</error>"
                    );
                }
                Status::Skip | Status::Cancel => {
                    let _ = write!(xml, "<skipped message=\"{status}: {reason}\"/>");
                }
            }
            // Earlier failed runs, as Maven Surefire writes reruns:
            // flakyFailure/flakyError in a test that passed on a retry,
            // rerunFailure/rerunError in one that never did.
            let prefix = if status.is_success() {
                "flaky"
            } else {
                "rerun"
            };
            for attempt in &test.retried {
                let kind = match attempt.status {
                    Status::Fail => "Failure",
                    _ => "Error",
                };
                let why = escape(attempt.fail_reason.as_deref().unwrap_or(""));
                let _ = write!(
                    xml,
                    "<{prefix}{kind} type=\"{}\" message=\"{why}\"><system-out>logs: {}</system-out></{prefix}{kind}>",
                    attempt.status,
                    escape(&attempt.logdir.display().to_string())
                );
            }
            if !test.evidence.is_empty() {
                let mut text = String::new();
                for file in &test.evidence {
                    let shown = project_dir
                        .and_then(|dir| file.strip_prefix(dir).ok())
                        .unwrap_or(file);
                    let _ = writeln!(text, "[[ATTACHMENT|{}]]", shown.display());
                }
                let _ = write!(xml, "<system-out>{}</system-out>", escape(&text));
            }
            if !status.is_success() || status == Status::Warn {
                let mut text = format!("logs: {}", test.logdir.display());
                for disk in &test.kept_disks {
                    let _ = write!(text, "\nkept disk: {}", disk.display());
                }
                let _ = write!(xml, "<system-err>{}</system-err>", escape(&text));
            }
            xml.push_str("</testcase>\n");
        }
        xml.push_str("  </testsuite>\n</testsuites>\n");
        xml
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{now, record_for_tests};

    #[test]
    fn junit_escapes_and_counts() {
        let record = record_for_tests;
        let results = JobResults::new(
            "abc",
            "/r/job.log".into(),
            now(),
            vec![
                record(Status::Pass, None),
                record(Status::Fail, Some("\"x\" < y")),
                record(Status::Interrupted, Some("timeout")),
            ],
        );
        let xml = results.junit();
        assert!(
            xml.contains("tests=\"3\" failures=\"1\" errors=\"1\""),
            "{xml}"
        );
        assert!(xml.contains("name=\"t&lt;&amp;&gt;\""));
        assert!(xml.contains("message=\"&quot;x&quot; &lt; y\""));
        assert!(!results.success());
    }

    #[test]
    fn results_xml_parses_whatever_a_guest_printed() {
        // Every code point, as a guest's console or a command's output
        // may put into a failure reason: XML 1.0 forbids most control
        // characters and U+FFFE and U+FFFF, which must not reach the file.
        let printed: String = (0..=0x10FFFF).filter_map(char::from_u32).collect();
        let record = record_for_tests(Status::Fail, Some(&printed));
        let results = JobResults::new("abc", "/r/job.log".into(), now(), vec![record]);
        let xml = results.junit();
        let parsed = roxmltree::Document::parse(&xml);
        assert!(
            parsed.is_ok(),
            "results.xml does not parse: {:?}",
            parsed.err()
        );
        let message = parsed
            .unwrap()
            .descendants()
            .find_map(|node| node.attribute("message").map(str::to_string))
            .expect("the failure's message");
        assert!(message.contains("\u{FFFD}") && message.contains("\u{10FFFF}"));
    }

    #[test]
    fn a_failure_bundle_is_attached_where_jenkins_and_gitlab_look() {
        let mut failed = record_for_tests(Status::Fail, Some("no"));
        failed.evidence = vec![
            "/builds/p/results/1-t/failure/screen.png".into(),
            "/builds/p/results/1-t/failure/console-tail.txt".into(),
        ];
        let results = JobResults::new("abc", "/r/job.log".into(), now(), vec![failed]);
        let jenkins = results.junit_in(None);
        assert!(
            jenkins.contains(
                "<system-out>[[ATTACHMENT|/builds/p/results/1-t/failure/screen.png]]\n\
                 [[ATTACHMENT|/builds/p/results/1-t/failure/console-tail.txt]]\n</system-out>"
            ),
            "{jenkins}"
        );
        let gitlab = results.junit_in(Some(Path::new("/builds/p")));
        assert!(
            gitlab.contains("[[ATTACHMENT|results/1-t/failure/screen.png]]"),
            "{gitlab}"
        );
        let elsewhere = results.junit_in(Some(Path::new("/builds/q")));
        assert!(elsewhere.contains("[[ATTACHMENT|/builds/p/"), "{elsewhere}");
    }
}
