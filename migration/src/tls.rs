//! TLS for the migration stream: credentials made once per VM in its
//! runtime directory, the `tls-creds-*` objects on both QEMUs (the
//! destination the server, the source the client), and `tls-creds` set
//! on both. A pre-shared key (`psk`), or x509 certificates (`x509`) from
//! a CA made for the VM, the server's for `localhost` and `127.0.0.1`.

use std::fmt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use serde_json::{Value, json};
use virtest_host::Host;
use virtest_qmp::Qmp;

use crate::error::{Error, Result};

/// How the migration stream is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// A pre-shared key (`tls-creds-psk`).
    Psk,
    /// x509 certificates (`tls-creds-x509`), peers verified both ways.
    X509,
}

impl Tls {
    /// Every kind, by name.
    pub const ALL: [Tls; 2] = [Tls::Psk, Tls::X509];

    /// Its name (`psk`, `x509`).
    pub fn as_str(self) -> &'static str {
        match self {
            Tls::Psk => "psk",
            Tls::X509 => "x509",
        }
    }

    /// QEMU's type of credentials object.
    fn qom_type(self) -> &'static str {
        match self {
            Tls::Psk => "tls-creds-psk",
            Tls::X509 => "tls-creds-x509",
        }
    }
}

impl fmt::Display for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tls {
    type Err = Error;

    fn from_str(name: &str) -> Result<Tls> {
        Tls::ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .ok_or_else(|| Error::Spec(format!("unknown TLS kind `{name}`; valid: psk, x509")))
    }
}

/// The ids of the credentials objects: the server's on a destination,
/// the client's on a source (a QEMU that was a destination keeps its
/// server object and gets a client one when it becomes a source).
const SERVER_ID: &str = "virtest-tls-server";
const CLIENT_ID: &str = "virtest-tls-client";

/// The VM's credentials of `kind` in `runtime_dir` (made the first time).
pub(crate) fn credentials(kind: Tls, runtime_dir: &Path) -> Result<PathBuf> {
    let dir = runtime_dir.join(format!("tls-{kind}"));
    if dir.join("done").exists() {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let made = std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| failed(format!("creating `{}`: {e}", dir.display())))
        .and_then(|()| match kind {
            Tls::Psk => psk(&dir),
            Tls::X509 => x509(&dir),
        })
        .and_then(|()| {
            std::fs::write(dir.join("done"), "")
                .map_err(|e| failed(format!("writing `{}`: {e}", dir.display())))
        });
    made.map(|()| dir)
}

/// Credentials of `kind` made apart from the VM's (another CA, another
/// key), in `runtime_dir`: a peer holding them must be refused.
pub(crate) fn foreign_credentials(kind: Tls, runtime_dir: &Path) -> Result<PathBuf> {
    let parent = runtime_dir.join("tls-foreign");
    match std::fs::DirBuilder::new().mode(0o700).create(&parent) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(failed(format!("creating `{}`: {e}", parent.display()))),
    }
    credentials(kind, &parent)
}

fn failed(reason: String) -> Error {
    Error::Spec(format!("making TLS credentials: {reason}"))
}

/// `keys.psk`: QEMU's default user `qemu` with 32 random bytes.
fn psk(dir: &Path) -> Result<()> {
    let mut key = [0u8; 32];
    getrandom(&mut key)?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join("keys.psk");
    std::fs::write(&path, format!("qemu:{hex}\n"))
        .map_err(|e| failed(format!("writing `{}`: {e}", path.display())))
}

fn getrandom(bytes: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(bytes))
        .map_err(|e| failed(format!("reading /dev/urandom: {e}")))
}

/// A CA, and the server's and client's keys and certificates it signed,
/// under the names QEMU looks for, made with `openssl`.
fn x509(dir: &Path) -> Result<()> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca-key.pem",
                "-out",
                "ca-cert.pem",
                "-days",
                "7",
                "-subj",
                "/CN=virtest migration CA",
            ],
        ],
    )?;
    for (peer, name) in [("server", "localhost"), ("client", "virtest-client")] {
        let (key, csr, cert) = (
            format!("{peer}-key.pem"),
            format!("{peer}.csr"),
            format!("{peer}-cert.pem"),
        );
        let subject = format!("/CN={name}");
        let names = "subjectAltName=DNS:localhost,IP:127.0.0.1";
        openssl(
            dir,
            &[
                &["req"],
                &ec[..],
                &[
                    "-keyout", &key, "-out", &csr, "-subj", &subject, "-addext", names,
                ],
            ],
        )?;
        openssl(
            dir,
            &[&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca-cert.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "7",
                "-copy_extensions",
                "copy",
            ]],
        )?;
    }
    Ok(())
}

fn openssl(dir: &Path, args: &[&[&str]]) -> Result<()> {
    let args: Vec<&str> = args.iter().flat_map(|a| a.iter().copied()).collect();
    let out = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            failed(match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "`openssl` is not installed (Debian: apt-get install openssl)".into()
                }
                _ => format!("running openssl: {e}"),
            })
        })?;
    match out.status.success() {
        true => Ok(()),
        false => Err(failed(format!(
            "`openssl {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// The files of `kind`'s credentials an endpoint reads: a server's or a
/// client's (never the CA's key).
fn endpoint_files(kind: Tls, server: bool) -> &'static [&'static str] {
    match (kind, server) {
        (Tls::Psk, _) => &["keys.psk"],
        (Tls::X509, true) => &["ca-cert.pem", "server-cert.pem", "server-key.pem"],
        (Tls::X509, false) => &["ca-cert.pem", "client-cert.pem", "client-key.pem"],
    }
}

/// Where QEMU on `host` reads the credentials in `dir` as the server or
/// the client: `dir` itself on a host that sees this machine's files,
/// else a copy of the endpoint's files in `there` (a private directory
/// of the VM's on the host, named for `dir`), each checked by its
/// SHA-256 as it arrives, and copied once.
pub(crate) async fn place(
    host: &Host,
    kind: Tls,
    dir: &Path,
    server: bool,
    there: &Path,
) -> Result<PathBuf> {
    if host.sees_local_files() {
        return Ok(dir.to_path_buf());
    }
    let failed_on = |e: virtest_host::Error| {
        failed(format!(
            "copying the credentials to host `{}`: {e}",
            host.name()
        ))
    };
    let files = endpoint_files(kind, server);
    let wanted: Vec<PathBuf> = files.iter().map(|f| there.join(f)).collect();
    let wanted: Vec<&Path> = wanted.iter().map(PathBuf::as_path).collect();
    let present = host.present(&wanted).await.map_err(failed_on)?;
    if present.len() == files.len() {
        return Ok(there.to_path_buf());
    }
    let shown = there.to_string_lossy();
    host.check(&["mkdir", "-p", "-m", "700", &shown])
        .await
        .map_err(failed_on)?;
    for file in files {
        let here = dir.join(file);
        let sha256 = Host::local().sha256(&here).await.map_err(failed_on)?;
        host.copy_in(&here, &there.join(file), &sha256, COPY_TIMEOUT)
            .await
            .map_err(failed_on)?;
    }
    Ok(there.to_path_buf())
}

/// How long copying a credentials file may take.
const COPY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Adds the credentials object of `kind` from `dir` to a QEMU as the
/// server (a destination) or the client (a source), unless it has it.
pub(crate) async fn add_object(qmp: &Qmp, kind: Tls, dir: &Path, server: bool) -> Result<String> {
    let (id, endpoint, side) = match server {
        true => (SERVER_ID, "server", "destination"),
        false => (CLIENT_ID, "client", "source"),
    };
    let existing = qmp
        .execute_raw("qom-list", json!({ "path": "/objects" }))
        .await
        .map_err(|source| Error::Qmp {
            side,
            step: "`qom-list /objects`".into(),
            source,
        })?;
    let has = existing
        .as_array()
        .is_some_and(|list| list.iter().any(|o| o["name"] == id));
    if has {
        qmp.execute_raw("object-del", json!({ "id": id }))
            .await
            .map_err(|source| Error::Qmp {
                side,
                step: format!("`object-del {id}`"),
                source,
            })?;
    }
    let mut args = json!({
        "qom-type": kind.qom_type(),
        "id": id,
        "dir": dir.to_string_lossy(),
        "endpoint": endpoint,
    });
    if kind == Tls::X509 {
        args["verify-peer"] = Value::Bool(true);
    }
    qmp.execute_raw("object-add", args)
        .await
        .map_err(|source| Error::Qmp {
            side,
            step: format!("`object-add` of the {kind} credentials"),
            source,
        })?;
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_by_name() {
        assert_eq!("psk".parse::<Tls>().unwrap(), Tls::Psk);
        assert_eq!("x509".parse::<Tls>().unwrap(), Tls::X509);
        let error = "ssl".parse::<Tls>().unwrap_err().to_string();
        assert!(error.contains("valid: psk, x509"), "{error}");
    }

    #[test]
    fn credentials_are_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let runtime = tempfile::tempdir().unwrap();
        let psk = credentials(Tls::Psk, runtime.path()).unwrap();
        let key = std::fs::read_to_string(psk.join("keys.psk")).unwrap();
        assert!(
            key.starts_with("qemu:") && key.trim().len() == 5 + 64,
            "{key}"
        );
        assert_eq!(credentials(Tls::Psk, runtime.path()).unwrap(), psk);
        assert_eq!(std::fs::read_to_string(psk.join("keys.psk")).unwrap(), key);
        let x509 = credentials(Tls::X509, runtime.path()).unwrap();
        for file in [
            "ca-cert.pem",
            "server-cert.pem",
            "server-key.pem",
            "client-cert.pem",
            "client-key.pem",
        ] {
            assert!(x509.join(file).is_file(), "{file}");
        }
        let mode = std::fs::metadata(&x509).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
}
