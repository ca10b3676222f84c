//! Running the host programs a guest build uses: a program that is not
//! installed names the package to install, and a failure carries the
//! command line and the end of what it said on stderr.

use std::process::{Command, Output};

use crate::error::{Error, Result};

/// Runs `cmd` (from `package`) to its end and returns its output; a
/// failure is [`Error::CommandFailed`] with the tail of its stderr.
pub(crate) fn run(cmd: &mut Command, package: &'static str) -> Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let line = std::iter::once(program.clone())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(command = %line, "running");
    let out = cmd
        .output()
        .map_err(|e| spawn_error(&program, package, e))?;
    if !out.status.success() {
        return Err(Error::CommandFailed {
            command: line,
            status: out.status,
            stderr: tail(&String::from_utf8_lossy(&out.stderr), 800),
        });
    }
    Ok(out)
}

/// A program that could not be started: not installed (naming the
/// package to install), or another I/O error.
pub(crate) fn spawn_error(program: &str, package: &'static str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::ToolMissing {
            program: program.to_string(),
            package,
        }
    } else {
        Error::Io {
            action: "running",
            path: program.into(),
            source: e,
        }
    }
}

/// The last `max` bytes of `text`, on a character boundary.
pub(crate) fn tail(text: &str, max: usize) -> String {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_cuts_on_a_char_boundary() {
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("ab", 10), "ab");
    }

    #[test]
    fn a_missing_program_names_its_package() {
        let error = run(&mut Command::new("/nonexistent/tool"), "some-package").unwrap_err();
        assert!(
            matches!(
                error,
                Error::ToolMissing {
                    package: "some-package",
                    ..
                }
            ),
            "{error:?}"
        );
    }
}
