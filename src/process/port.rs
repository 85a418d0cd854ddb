//! Who listens on a local TCP port.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::pid::cmdline;

/// Whether something accepts TCP connections at host:port.
pub fn port_open(host: &str, port: u16) -> bool {
    let Ok(addrs) = (host, port).to_socket_addrs() else { return false };
    addrs.into_iter().any(|a: SocketAddr| TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
}

/// The pid listening on a local TCP port, found through /proc (None if not visible to us).
pub fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue; // not LISTEN
            }
            let local_port = f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| target.to_str() == Some(i.as_str())) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// Describes who holds a port, for error messages.
pub fn port_holder(port: u16) -> String {
    match listener_pid(port) {
        Some(pid) => {
            let cmd = cmdline(pid);
            let short: String = cmd.chars().take(160).collect();
            format!("pid {pid} ({short})")
        }
        None => "a process fleet cannot see".to_string(),
    }
}
