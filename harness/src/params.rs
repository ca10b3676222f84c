//! Test parameters: defaults, a params file (TOML or JSON), environment
//! variables and `-p key=value`, in rising precedence; lists in the file
//! make variants.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use thiserror::Error;

mod known;
mod value;

pub use known::*;
pub use value::ParamValue;

/// Whether the framework knows `key`.
fn is_known(key: &str) -> bool {
    KNOWN.iter().any(|k| k.name() == key)
}

/// Parameter names whose values never reach a log or a results file.
pub fn is_secret(name: &str) -> bool {
    name.contains("password") || name.contains("secret")
}

/// A parameter's value as logs, errors and results may show it.
fn shown(key: &str, value: &str) -> String {
    if is_secret(key) && !value.is_empty() {
        "<redacted>".to_string()
    } else {
        value.to_string()
    }
}

/// What can be wrong with parameters.
#[derive(Debug, Error)]
pub enum ParamError {
    /// A value is not of the parameter's type.
    #[error("parameter `{key}` is `{value}`, which is not {expected}")]
    Type {
        /// The parameter.
        key: String,
        /// Its value.
        value: String,
        /// What it must be.
        expected: String,
    },
    /// The params file cannot be read or does not parse.
    #[error("params file `{path}`: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line where the parser says.
        reason: String,
    },
    /// `-p` without `=`.
    #[error("`-p {0}` is not key=value")]
    Assignment(String),
}

/// The parameters of one test run (one variant).
///
/// ```
/// use virtest_harness::Params;
/// let mut params = Params::defaults();
/// params.set("migration_iterations", "2");
/// assert_eq!(params.get_or("migration_iterations", 4u32).unwrap(), 2);
/// assert_eq!(params.get_or("timeout", 0.0).unwrap(), 600.0);
/// assert!(params.get::<u32>("migration_mode").is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Params {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

impl Params {
    /// The known parameters' defaults.
    pub fn defaults() -> Params {
        let mut params = Params::default();
        for known in KNOWN.iter().filter(|k| !k.default().is_empty()) {
            params.set(known.name(), known.default());
        }
        params
    }

    /// Sets `key` (no check; [`Params::check`] checks known keys).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.values.insert(key.into(), value.into());
    }

    /// The raw value, if set.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The value parsed as `T`, if set; an error names the key and type.
    pub fn get<T: FromStr>(&self, key: &str) -> Result<Option<T>, ParamError> {
        let Some(value) = self.get_str(key) else {
            return Ok(None);
        };
        value.parse().map(Some).map_err(|_| ParamError::Type {
            key: key.into(),
            value: shown(key, value),
            expected: short_type_name::<T>(),
        })
    }

    /// The value parsed as `T`, or `default` when unset.
    pub fn get_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, ParamError> {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// A duration in seconds, or `default` when unset.
    pub fn seconds_or(
        &self,
        key: &str,
        default: std::time::Duration,
    ) -> Result<std::time::Duration, ParamError> {
        Ok(self
            .get::<f64>(key)?
            .map(std::time::Duration::from_secs_f64)
            .unwrap_or(default))
    }

    /// Every parameter, secrets redacted: for logs and results files.
    pub fn redacted(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .map(|(k, v)| (k.clone(), shown(k, v)))
            .collect()
    }

    /// Checks each known parameter's value against its type.
    pub fn check(&self) -> Result<(), ParamError> {
        for known in KNOWN {
            if let Some(value) = self.get_str(known.name())
                && !known.accepts(value)
            {
                return Err(ParamError::Type {
                    key: known.name().into(),
                    value: shown(known.name(), value),
                    expected: known.expected(),
                });
            }
        }
        Ok(())
    }
}

/// `u32` rather than `core::primitive::u32`.
fn short_type_name<T>() -> String {
    let name = std::any::type_name::<T>();
    name.rsplit("::").next().unwrap_or(name).to_string()
}

/// One combination of the params file's lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// `migration_mode=unix,cpus=2`; empty without lists.
    pub name: String,
    /// Its parameters, all sources applied.
    pub params: Params,
}

/// Where parameters come from, before they are combined.
#[derive(Debug, Clone, Default)]
pub struct ParamSources {
    /// A params file (`.toml`, or `.json`).
    pub file: Option<PathBuf>,
    /// `-p key=value`, in order.
    pub assignments: Vec<String>,
}

impl ParamSources {
    /// Every variant: defaults, then the file (its lists multiplied out),
    /// then `VIRTEST_<KEY>` variables for known keys, then `-p`. Unknown
    /// keys in the file come back as warnings naming them.
    pub fn variants(&self) -> Result<(Vec<Variant>, Vec<String>), ParamError> {
        let env = |name: &str| std::env::var(name).ok();
        self.variants_with(&env)
    }

    /// [`ParamSources::variants`] with the environment given, for tests.
    pub fn variants_with(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Vec<Variant>, Vec<String>), ParamError> {
        let mut warnings = Vec::new();
        let file = match &self.file {
            Some(path) => load_file(path)?,
            None => BTreeMap::new(),
        };
        let unknown = |source: &str, key: &str| {
            format!(
                "{source}: unknown parameter `{key}` (tests may still read it; known: {})",
                KNOWN
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        for key in file.keys().filter(|k| !is_known(k)) {
            warnings.push(unknown("params file", key));
        }
        let mut later = Params::default();
        for known in KNOWN {
            if let Some(value) = env(&format!("VIRTEST_{}", known.name().to_uppercase())) {
                later.set(known.name(), value);
            }
        }
        for assignment in &self.assignments {
            let (key, value) = assignment
                .split_once('=')
                .ok_or_else(|| ParamError::Assignment(assignment.clone()))?;
            if !is_known(key.trim()) {
                warnings.push(unknown(&format!("-p {}", key.trim()), key.trim()));
            }
            later.set(key.trim(), value);
        }
        let mut variants = vec![Variant {
            name: String::new(),
            params: Params::defaults(),
        }];
        for (key, values) in &file {
            let overridden = later.values.contains_key(key);
            let values = if overridden {
                &values[..1]
            } else {
                &values[..]
            };
            variants = variants
                .into_iter()
                .flat_map(|variant| {
                    values.iter().enumerate().map(move |(index, value)| {
                        let mut next = variant.clone();
                        next.params.set(key.clone(), value.clone());
                        if values.len() > 1 {
                            if !next.name.is_empty() {
                                next.name.push(',');
                            }
                            next.name.push_str(&variant_label(key, index, value));
                        }
                        next
                    })
                })
                .collect();
        }
        for variant in &mut variants {
            for (key, value) in &later.values {
                variant.params.set(key.clone(), value.clone());
            }
            variant.params.check()?;
        }
        Ok((variants, warnings))
    }
}

/// How one value of a listed key names its variant: `key=value`, or
/// `key=#2` (its place in the list) for a secret, whose value must not
/// reach a test name, a directory or a results file.
fn variant_label(key: &str, index: usize, value: &str) -> String {
    if is_secret(key) {
        format!("{key}=#{}", index + 1)
    } else {
        format!("{key}={value}")
    }
}

/// A params file as key → values (a scalar is one value).
fn load_file(path: &Path) -> Result<BTreeMap<String, Vec<String>>, ParamError> {
    let bad = |reason: String| ParamError::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
    let table: BTreeMap<String, serde_json::Value> =
        if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?
        } else {
            toml::from_str(&text).map_err(|e| bad(toml_error(&text, &e)))?
        };
    let scalar = |key: &str, value: &serde_json::Value| match value {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        other => Err(bad(format!(
            "`{key}` must be a string, number, boolean or a list of them, not {other}"
        ))),
    };
    table
        .iter()
        .map(|(key, value)| {
            let values = match value {
                serde_json::Value::Array(items) if items.is_empty() => {
                    return Err(bad(format!("`{key}` is an empty list")));
                }
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|v| scalar(key, v))
                    .collect::<Result<_, _>>()?,
                other => vec![scalar(key, other)?],
            };
            Ok((key.clone(), values))
        })
        .collect()
}

/// toml's error with its line number said first.
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message();
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources_of(
        file: &str,
        ext: &str,
        assignments: &[&str],
    ) -> (tempfile::TempDir, ParamSources) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("params.{ext}"));
        std::fs::write(&path, file).unwrap();
        let sources = ParamSources {
            file: Some(path),
            assignments: assignments.iter().map(|a| a.to_string()).collect(),
        };
        (dir, sources)
    }

    #[test]
    fn lists_multiply_into_named_variants() {
        let (_dir, sources) = sources_of(
            "migration_mode = [\"tcp\", \"unix\"]\ncpus = [1, 2]\nmemory = 512\n",
            "toml",
            &[],
        );
        let (variants, warnings) = sources.variants_with(&|_| None).unwrap();
        assert!(warnings.is_empty());
        let names: Vec<_> = variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "cpus=1,migration_mode=tcp",
                "cpus=1,migration_mode=unix",
                "cpus=2,migration_mode=tcp",
                "cpus=2,migration_mode=unix"
            ]
        );
        assert_eq!(variants[3].params.get_str("memory"), Some("512"));
        assert_eq!(variants[0].params.get_str("timeout"), Some("600"));
    }

    #[test]
    fn precedence_is_file_then_environment_then_p() {
        let (_dir, sources) = sources_of(
            "{\"login_timeout\": 10, \"migration_mode\": [\"tcp\", \"fd\"]}",
            "json",
            &["migration_mode=unix"],
        );
        let env = |name: &str| (name == "VIRTEST_LOGIN_TIMEOUT").then(|| "20".to_string());
        let (variants, _) = sources.variants_with(&env).unwrap();
        assert_eq!(variants.len(), 1, "-p fixes the listed key");
        assert_eq!(variants[0].params.get_str("migration_mode"), Some("unix"));
        assert_eq!(variants[0].params.get_str("login_timeout"), Some("20"));
    }

    #[test]
    fn an_unknown_key_is_a_warning_naming_it() {
        let (_dir, sources) = sources_of("migration_mod = \"tcp\"\n", "toml", &[]);
        let (_, warnings) = sources.variants_with(&|_| None).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("`migration_mod`"), "{warnings:?}");
    }

    #[test]
    fn a_p_typo_warns_like_a_file_typo() {
        let (_dir, sources) = sources_of("", "toml", &["login_timout=5", "cpus=2"]);
        let (_, warnings) = sources.variants_with(&|_| None).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("-p login_timout: unknown parameter `login_timout`"));
    }

    #[test]
    fn no_memory_or_processors_is_refused() {
        for assignment in ["memory=0", "cpus=0"] {
            let (_dir, sources) = sources_of("", "toml", &[assignment]);
            let error = sources.variants_with(&|_| None).unwrap_err().to_string();
            assert!(error.contains("at least 1"), "{error}");
        }
    }

    #[test]
    fn forwarded_ports_are_checked_before_any_test_runs() {
        let ports = |text: &str| {
            let mut params = Params::default();
            params.set("forward_ports", text);
            params.value_if_set(&FORWARD_PORTS).ok().flatten()
        };
        assert_eq!(ports("80, 443"), Some(vec![80, 443]));
        assert_eq!(ports(" "), Some(vec![]));
        for bad in ["http", "0", "65536", "80;443"] {
            assert_eq!(ports(bad), None, "{bad}");
            let assignment = format!("forward_ports={bad}");
            let (_dir, sources) = sources_of("", "toml", &[&assignment]);
            let error = sources.variants_with(&|_| None).unwrap_err().to_string();
            assert!(error.contains("TCP ports 1-65535"), "{error}");
        }
    }

    #[test]
    fn a_wrong_type_names_the_key_and_the_type() {
        let (_dir, sources) = sources_of("login_timeout = \"soon\"\n", "toml", &[]);
        let error = sources.variants_with(&|_| None).unwrap_err().to_string();
        assert_eq!(
            error,
            "parameter `login_timeout` is `soon`, which is not a number of seconds"
        );
        let (_dir, sources) = sources_of("", "toml", &["migration_mode=rdma"]);
        let error = sources.variants_with(&|_| None).unwrap_err().to_string();
        assert!(error.contains("one of tcp, unix, exec, fd"), "{error}");
    }

    #[test]
    fn a_file_that_does_not_parse_says_where() {
        let (_dir, sources) = sources_of("cpus = 2\nmemory = = 3\n", "toml", &[]);
        let error = sources.variants_with(&|_| None).unwrap_err().to_string();
        assert!(error.contains("params.toml"), "{error}");
        assert!(error.contains("line 2"), "{error}");
        let (_dir, sources) = sources_of("{\"cpus\": 2,\n \"memory\" 3}", "json", &[]);
        let error = sources.variants_with(&|_| None).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn a_listed_secret_names_its_variants_by_place_not_value() {
        let (_dir, sources) = sources_of(
            "guest_password = [\"pw-one\", \"pw-two\"]\nmigration_mode = [\"tcp\", \"fd\"]\n",
            "toml",
            &[],
        );
        let (variants, _) = sources.variants_with(&|_| None).unwrap();
        let names: Vec<_> = variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "guest_password=#1,migration_mode=tcp",
                "guest_password=#1,migration_mode=fd",
                "guest_password=#2,migration_mode=tcp",
                "guest_password=#2,migration_mode=fd"
            ]
        );
        assert_eq!(variants[2].params.get_str("guest_password"), Some("pw-two"));
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_shown() {
        let mut params = Params::defaults();
        params.set("vault_secret", "s3cr3t");
        let error = params.get::<u32>("vault_secret").unwrap_err().to_string();
        assert!(!error.contains("s3cr3t"), "{error}");
        assert!(error.contains("`vault_secret`"), "{error}");
    }

    #[test]
    fn secrets_are_redacted() {
        let mut params = Params::defaults();
        params.set("guest_password", "hunter2");
        assert_eq!(params.redacted()["guest_password"], "<redacted>");
        assert!(!format!("{params:?}").contains("hunter2"));
    }
}
