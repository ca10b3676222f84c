//! A guest's TPM 2.0 driven without tpm2-tools (which the tiny guest
//! lacks): a raw `TPM2_PCR_Extend` written to `/dev/tpm0` by the shell,
//! and the value the PCR must then hold.

use sha2::{Digest, Sha256};

/// The PCR the tests extend: 16, the debug PCR, which nothing measures
/// into and which starts at zero.
pub const DEBUG_PCR: u32 = 16;

/// A guest shell command that extends SHA-256 PCR `pcr` by `digest`
/// through `/dev/tpm0` and prints the TPM's response code (`0` is
/// success) in hex.
pub fn extend_pcr_command(pcr: u32, digest: &[u8; 32]) -> String {
    let mut command = Vec::new();
    command.extend(0x8002u16.to_be_bytes()); // TPM_ST_SESSIONS
    command.extend(65u32.to_be_bytes()); // the command's size
    command.extend(0x0000_0182u32.to_be_bytes()); // TPM_CC_PCR_Extend
    command.extend(pcr.to_be_bytes());
    command.extend(9u32.to_be_bytes()); // the authorization area's size
    command.extend(0x4000_0009u32.to_be_bytes()); // TPM_RS_PW, empty password
    command.extend([0, 0, 0, 0, 0]); // no nonce, no attributes, no HMAC
    command.extend(1u32.to_be_bytes()); // one digest
    command.extend(0x000Bu16.to_be_bytes()); // TPM_ALG_SHA256
    command.extend(digest);
    assert_eq!(command.len(), 65);
    let octal: String = command.iter().map(|b| format!("\\{b:03o}")).collect();
    // One write of the command, then its response read from the same
    // descriptor: bytes 6 to 9 are the response code.
    format!(
        "exec 3<>/dev/tpm0 && printf '{octal}' >&3 && \
         dd bs=4096 count=1 <&3 2>/dev/null | od -An -tx1 -j6 -N4 | tr -d ' \\n'; exec 3>&-"
    )
}

/// What SHA-256 PCR holding `before` holds after an extend by `digest`,
/// in hex, as `/sys/class/tpm/tpm0/pcr-sha256/N` prints it.
pub fn extended(before: &[u8; 32], digest: &[u8; 32]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(before);
    hasher.update(digest);
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// A guest shell command that prints SHA-256 PCR `pcr` in hex.
pub fn read_pcr_command(pcr: u32) -> String {
    format!("cat /sys/class/tpm/tpm0/pcr-sha256/{pcr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_one_printf_of_65_bytes() {
        let command = extend_pcr_command(16, &[0xab; 32]);
        assert_eq!(command.matches('\\').count() - 1, 65, "{command}");
        assert!(command.starts_with("exec 3<>/dev/tpm0 && printf '\\200\\002"));
    }

    #[test]
    fn an_extend_hashes_the_old_value_with_the_digest() {
        // sha256 of 64 zero bytes.
        assert_eq!(
            extended(&[0; 32], &[0; 32]),
            "F5A5FD42D16A20302798EF6ED309979B43003D2320D9F0E8EA9831A92759FB4B"
        );
    }
}
