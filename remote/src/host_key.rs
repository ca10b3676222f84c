//! Host keys in OpenSSH's text forms: a key blob's `type base64` line,
//! the blob back out of one, and the unpadded base64 of fingerprints.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 without padding, as OpenSSH prints fingerprints.
pub(crate) fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The OpenSSH public key line of a key blob: its type (the blob's first
/// string) and the blob in padded base64.
pub(crate) fn openssh_line(blob: &[u8]) -> String {
    let kind = blob
        .get(..4)
        .map(|len| u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize)
        .and_then(|len| blob.get(4..4 + len))
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let mut encoded = base64(blob);
    while !encoded.len().is_multiple_of(4) {
        encoded.push('=');
    }
    format!("{kind} {encoded}")
}

/// The key blob of an OpenSSH public key line (`type base64 [comment]`).
pub(crate) fn public_key_blob(line: &str) -> Option<Vec<u8>> {
    let text = line.split_whitespace().nth(1)?.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        acc = acc << 6 | B64.iter().position(|&b| b == c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg");
        assert_eq!(base64(b"fo"), "Zm8");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(public_key_blob("ssh-ed25519 Zm9vYmE= c").unwrap(), b"fooba");
        assert_eq!(public_key_blob("ssh-ed25519 Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(public_key_blob("nothing"), None);
    }

    #[test]
    fn a_key_blob_makes_an_openssh_line_that_reads_back() {
        let mut blob = Vec::new();
        blob.extend_from_slice(&11u32.to_be_bytes());
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&32u32.to_be_bytes());
        blob.extend_from_slice(&[7u8; 32]);
        let line = openssh_line(&blob);
        assert!(
            line.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"),
            "{line}"
        );
        let encoded = line.split_whitespace().nth(1).unwrap();
        assert!(encoded.len().is_multiple_of(4), "{line}");
        blob.push(1);
        let padded = openssh_line(&blob);
        assert!(padded.ends_with("AQ=="), "{padded}");
        assert_eq!(public_key_blob(&padded).unwrap(), blob);
        blob.pop();
        assert_eq!(public_key_blob(&line).unwrap(), blob);
    }
}
