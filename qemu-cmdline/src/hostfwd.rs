//! Host-forward rules of QEMU user networking (`hostfwd=tcp:127.0.0.1:2222-:22`).
//!
//! Rules the framework makes bind 127.0.0.1: a test guest's sshd is
//! reachable from this machine only, unless the caller asks otherwise.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// One forwarded port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFwd {
    /// `tcp` or `udp`.
    pub udp: bool,
    /// The host address to bind; `None` is every address.
    pub host_addr: Option<Ipv4Addr>,
    /// The host port (0: QEMU picks one).
    pub host_port: u16,
    /// The guest address; `None` is the guest's first address.
    pub guest_addr: Option<Ipv4Addr>,
    /// The guest port.
    pub guest_port: u16,
}

impl HostFwd {
    /// A TCP forward from 127.0.0.1:`host_port` to the guest's `guest_port`.
    ///
    /// ```
    /// use virtest_qemu_cmdline::HostFwd;
    /// assert_eq!(HostFwd::tcp(2222, 22).to_string(), "tcp:127.0.0.1:2222-:22");
    /// ```
    pub fn tcp(host_port: u16, guest_port: u16) -> HostFwd {
        HostFwd {
            udp: false,
            host_addr: Some(Ipv4Addr::LOCALHOST),
            host_port,
            guest_addr: None,
            guest_port,
        }
    }

    /// The same rule bound to every host address: reachable from other
    /// machines. Only on explicit request.
    pub fn on_all_addresses(mut self) -> HostFwd {
        self.host_addr = None;
        self
    }
}

impl fmt::Display for HostFwd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = |a: Option<Ipv4Addr>| a.map(|a| a.to_string()).unwrap_or_default();
        write!(
            f,
            "{}:{}:{}-{}:{}",
            if self.udp { "udp" } else { "tcp" },
            addr(self.host_addr),
            self.host_port,
            addr(self.guest_addr),
            self.guest_port
        )
    }
}

impl FromStr for HostFwd {
    type Err = String;

    fn from_str(s: &str) -> Result<HostFwd, String> {
        let bad = || {
            format!(
                "`{s}` is not a hostfwd rule ([tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport)"
            )
        };
        let (host, guest) = s.split_once('-').ok_or_else(bad)?;
        let mut host_parts: Vec<&str> = host.split(':').collect();
        let udp = match host_parts.first() {
            Some(&"udp") => true,
            Some(&"tcp") | Some(&"") => false,
            _ => return Err(bad()),
        };
        if host_parts.len() != 3 {
            return Err(bad());
        }
        let host_port = host_parts
            .pop()
            .and_then(|p| p.parse().ok())
            .ok_or_else(bad)?;
        let addr = |a: &str| {
            if a.is_empty() {
                Ok(None)
            } else {
                a.parse().map(Some).map_err(|_| bad())
            }
        };
        let host_addr = addr(host_parts[1])?;
        let (guest_addr, guest_port) = guest.rsplit_once(':').ok_or_else(bad)?;
        Ok(HostFwd {
            udp,
            host_addr,
            host_port,
            guest_addr: addr(guest_addr)?,
            guest_port: guest_port.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip() {
        for rule in [
            "tcp:127.0.0.1:2222-:22",
            "udp::5353-10.0.2.15:53",
            "tcp::0-:22",
        ] {
            let parsed: HostFwd = rule.parse().unwrap();
            assert_eq!(parsed.to_string(), rule);
        }
        assert_eq!(
            HostFwd::tcp(1, 22).on_all_addresses().to_string(),
            "tcp::1-:22"
        );
        assert!("tcp:2222:22".parse::<HostFwd>().is_err());
        assert!("sctp::1-:2".parse::<HostFwd>().is_err());
    }
}
