//! What the benchmarks share: how many runs, and the median of them.

#![allow(dead_code)] // each benchmark uses its own part

/// The number of runs: the first argument, else `default`.
pub fn runs(default: usize) -> Result<usize, std::num::ParseIntError> {
    std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .map(|runs| runs.unwrap_or(default))
}

/// The median of `values` (the upper middle of an even count), leaving
/// out values that do not compare (NaN).
pub fn median<T: Copy + PartialOrd>(values: &[T]) -> T {
    let mut sorted: Vec<T> = values
        .iter()
        .copied()
        .filter(|v| v.partial_cmp(v).is_some())
        .collect();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    sorted[sorted.len() / 2]
}

/// The cache's build of QEMU `version` (`virtest bootstrap --qemu VERSION`).
pub fn cached_qemu(version: &str) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let home = virtest::guest::cache::default_home()?;
    let build = virtest::guest::qemu_builds::find(&home, version).ok_or_else(|| {
        format!("no QEMU {version} in the cache: run `virtest bootstrap --qemu {version}`")
    })?;
    Ok(build.binary)
}
