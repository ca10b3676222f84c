//! Host ports for forwarded guest services and migration streams.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::Mutex;

/// How many recently handed-out ports this process will not hand out again.
const REMEMBERED: usize = 256;

/// A TCP port on 127.0.0.1 that is free right now and that this process
/// has not handed out recently, so VMs started at once never get the same
/// one. Another process may still take it before QEMU binds it: callers
/// retry with another port when QEMU cannot bind.
pub fn free_port() -> std::io::Result<u16> {
    static RECENT: Mutex<VecDeque<u16>> = Mutex::new(VecDeque::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut recent = RECENT.lock().expect("ports lock");
        if recent.contains(&port) {
            continue;
        }
        if recent.len() == REMEMBERED {
            recent.pop_front();
        }
        recent.push_back(port);
        return Ok(port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_not_handed_out_twice() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            assert!(seen.insert(free_port().unwrap()));
        }
    }
}
