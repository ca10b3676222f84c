//! Fetching an image into the cache (the `provision` feature).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Progress, cached_path};
use crate::error::{Error, IoContext, Result};
use crate::manifest::hex;

/// The image at `url`, from the cache, else downloaded (reporting to
/// `progress`) and checked against `sha256` first.
pub fn fetch(home: &Path, url: &str, sha256: &str, progress: Progress<'_>) -> Result<PathBuf> {
    let path = cached_path(home, url, sha256);
    let dir = path.parent().expect("under images/").to_path_buf();
    if path.is_file() {
        return Ok(path);
    }
    crate::cache::ensure_writable(&dir)?;
    let lock_path = dir.with_extension("lock");
    let lock = fs::File::create(&lock_path).io_context("creating", &lock_path)?;
    lock.lock().io_context("locking", &lock_path)?;
    // Another process may have fetched it while this one waited.
    if path.is_file() {
        return Ok(path);
    }
    let partial = dir.join(format!(".download-{}.part", std::process::id()));
    let result = download(url, &partial, progress).and_then(|got| {
        if got == sha256 {
            fs::rename(&partial, &path).io_context("installing", &path)
        } else {
            Err(Error::ImageHash {
                url: url.to_string(),
                expected: sha256.to_string(),
                got,
            })
        }
    });
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result.map(|()| path)
}

/// Downloads `url` into `to`, returning the SHA-256 of what came.
fn download(url: &str, to: &Path, progress: Progress<'_>) -> Result<String> {
    let failed = |reason: String| Error::Download {
        url: url.to_string(),
        reason,
    };
    // TLS through the system's OpenSSL, which SSH already links.
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::NativeTls)
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder().tls_config(tls).build().into();
    let response = agent.get(url).call().map_err(|e| failed(e.to_string()))?;
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut body = response.into_body().into_reader();
    let mut file = fs::File::create(to).io_context("writing", to)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    progress(0, total);
    loop {
        let n = body.read(&mut buf).map_err(|e| failed(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).io_context("writing", to)?;
        got += n as u64;
        progress(got, total);
    }
    if let Some(total) = total.filter(|t| *t != got) {
        return Err(failed(format!("the server sent {got} of {total} bytes")));
    }
    file.sync_all().io_context("writing", to)?;
    Ok(hex(&hasher.finalize()))
}
