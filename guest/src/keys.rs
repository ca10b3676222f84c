//! The guest's secrets: its SSH host key, the client key and password
//! tests log in with. Made once per cache and kept in a 0700 directory, so
//! rebuilding the guest does not change how tests reach it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use ssh_key::rand_core::{OsRng, RngCore};
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey};

use crate::error::{Error, IoContext, Result};

/// Crypt rounds for the root password: the minimum sha512-crypt allows,
/// since each login under TCG pays for every round and the guest is a
/// throwaway reachable only from 127.0.0.1.
const CRYPT_ROUNDS: usize = 1000;

/// Keys and password of one guest cache.
pub struct GuestSecrets {
    /// The guest's SSH host key.
    pub host_key: PrivateKey,
    /// The key tests log in with; its file is `client_key_path`.
    pub client_key: PrivateKey,
    /// Where the client's private key is (mode 0600).
    pub client_key_path: PathBuf,
    /// The root password.
    pub password: String,
}

impl GuestSecrets {
    /// Reads the secrets kept in `dir`, making whatever is missing.
    pub fn load_or_create(dir: &Path) -> Result<GuestSecrets> {
        fs::create_dir_all(dir).io_context("creating", dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).io_context("securing", dir)?;
        let host_key = key(&dir.join("ssh_host_ed25519_key"), "virtest-guest-host")?;
        let client_key_path = dir.join("id_ed25519");
        let client_key = key(&client_key_path, "virtest-client")?;
        let password_path = dir.join("password");
        let password = match fs::read_to_string(&password_path) {
            Ok(p) if p.trim().len() >= 12 => p.trim().to_string(),
            _ => {
                let password = random_password();
                write_private(&password_path, password.as_bytes())?;
                password
            }
        };
        Ok(GuestSecrets {
            host_key,
            client_key,
            client_key_path,
            password,
        })
    }

    /// The root password as a sha512-crypt line for `/etc/shadow`.
    pub fn password_hash(&self) -> String {
        crypt_sha512(&self.password)
    }

    /// The host key in the format dropbear reads (`-r FILE`).
    pub fn dropbear_host_key(&self) -> Vec<u8> {
        dropbear_ed25519(&self.host_key)
    }

    /// The public half of a key as an OpenSSH line.
    pub fn public_line(key: &PrivateKey) -> String {
        key.public_key().to_openssh().unwrap_or_default()
    }

    /// A key's SHA-256 fingerprint (`SHA256:...`).
    pub fn fingerprint(key: &PrivateKey) -> String {
        key.public_key().fingerprint(HashAlg::Sha256).to_string()
    }
}

/// The OpenSSH public key line of the private key at `path`: the
/// `<path>.pub` beside it when there is one, else derived from the key.
pub fn public_line_of(path: &Path) -> Result<String> {
    let beside = path.with_extension("pub");
    if let Ok(line) = fs::read_to_string(&beside)
        && !line.trim().is_empty()
    {
        return Ok(line.trim().to_string());
    }
    let key = PrivateKey::read_openssh_file(path).map_err(|source| Error::Key {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(GuestSecrets::public_line(&key))
}

/// virtest's own login key, made once in the cache's `keys/` under
/// `home`: what a cloud-init seed authorizes when the guest names no key.
pub fn virtest_key(home: &Path) -> Result<PathBuf> {
    Ok(GuestSecrets::load_or_create(&home.join("keys"))?.client_key_path)
}

/// Reads an ed25519 key from `path`, or makes and writes one.
fn key(path: &Path, comment: &str) -> Result<PrivateKey> {
    let key_error = |source| Error::Key {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(key) = PrivateKey::read_openssh_file(path)
        && key.algorithm() == Algorithm::Ed25519
    {
        return Ok(key);
    }
    let mut key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(key_error)?;
    key.set_comment(comment);
    let text = key.to_openssh(LineEnding::LF).map_err(key_error)?;
    write_private(path, text.as_bytes())?;
    fs::write(
        path.with_extension("pub"),
        format!("{}\n", GuestSecrets::public_line(&key)),
    )
    .io_context("writing", path.with_extension("pub"))?;
    Ok(key)
}

/// Writes a file only its owner can read, replacing any old one.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .io_context("writing", path)?;
    file.write_all(data).io_context("writing", path)
}

fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 20];
    OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// `$6$rounds=N$salt$hash`, with a salt derived from the password so the
/// same password always gives the same initramfs.
fn crypt_sha512(password: &str) -> String {
    const SALT_CHARS: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let digest = Sha256::digest(format!("virtest-salt:{password}"));
    let salt: String = digest
        .iter()
        .take(16)
        .map(|b| SALT_CHARS[*b as usize % 64] as char)
        .collect();
    let params =
        sha_crypt::Sha512Params::new(CRYPT_ROUNDS).expect("rounds within sha-crypt's range");
    let hash = sha_crypt::sha512_crypt_b64(password.as_bytes(), salt.as_bytes(), &params)
        .expect("sha512-crypt of a valid salt");
    format!("$6$rounds={CRYPT_ROUNDS}${salt}${hash}")
}

/// Dropbear's own key file: the string "ssh-ed25519", then a 64-byte
/// string of the 32-byte seed followed by the 32-byte public key.
fn dropbear_ed25519(key: &PrivateKey) -> Vec<u8> {
    let pair = key.key_data().ed25519().expect("guest keys are ed25519");
    let mut out = Vec::with_capacity(4 + 11 + 4 + 64);
    let mut string = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    string(b"ssh-ed25519");
    string(&pair.to_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_persist_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = GuestSecrets::load_or_create(dir.path()).unwrap();
        let again = GuestSecrets::load_or_create(dir.path()).unwrap();
        assert_eq!(first.password, again.password);
        assert_eq!(
            GuestSecrets::public_line(&first.host_key),
            GuestSecrets::public_line(&again.host_key)
        );
        assert_ne!(
            GuestSecrets::public_line(&first.host_key),
            GuestSecrets::public_line(&first.client_key)
        );
        for name in ["id_ed25519", "ssh_host_ed25519_key", "password"] {
            let mode = fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let dir_mode = fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }

    #[test]
    fn crypt_matches_a_known_vector() {
        // From the SHA-crypt specification's test vectors.
        let params = sha_crypt::Sha512Params::new(5000).unwrap();
        let hash = sha_crypt::sha512_crypt_b64(b"Hello world!", b"saltstring", &params).unwrap();
        assert_eq!(
            hash,
            "svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
        );
        let line = crypt_sha512("pw");
        assert!(
            line.starts_with("$6$rounds=1000$") && line.split('$').count() == 5,
            "{line}"
        );
        assert_eq!(line, crypt_sha512("pw"));
    }

    #[test]
    fn dropbear_key_layout() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = GuestSecrets::load_or_create(dir.path()).unwrap();
        let bytes = secrets.dropbear_host_key();
        assert_eq!(bytes.len(), 4 + 11 + 4 + 64);
        assert_eq!(&bytes[4..15], b"ssh-ed25519");
        let public = secrets
            .host_key
            .public_key()
            .key_data()
            .ed25519()
            .unwrap()
            .0;
        assert_eq!(&bytes[19 + 32..], &public);
    }
}
