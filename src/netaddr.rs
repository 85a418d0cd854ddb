//! The one rule for reaching a listener from this machine: a wildcard bind is reached on
//! loopback (`0.0.0.0` → `127.0.0.1`, `::` → `::1`), any other address as it is. Pure.

/// The host to connect to for a listener bound to `bind`.
pub fn connect_host(bind: &str) -> &str {
    match bind {
        "" | "0.0.0.0" => "127.0.0.1",
        "::" | "[::]" => "::1",
        other => other.trim_start_matches('[').trim_end_matches(']'),
    }
}

/// `http://HOST:PORT` for a listener bound to `bind` (IPv6 in brackets).
pub fn http_url(bind: &str, port: u16) -> String {
    let host = connect_host(bind);
    if host.contains(':') {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    }
}

/// `HOST:PORT` to bind (IPv6 in brackets).
pub fn join_host_port(bind: &str, port: u16) -> String {
    let host = bind.trim_start_matches('[').trim_end_matches(']');
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `"127.0.0.1:8700"` / `"[::1]:8700"` → (host, port); None when it is not an IP address and a port.
pub fn split_listen(s: &str) -> Option<(String, u16)> {
    let addr: std::net::SocketAddr = s.parse().ok()?;
    Some((addr.ip().to_string(), addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_reached_on_loopback() {
        assert_eq!(http_url("0.0.0.0", 4000), "http://127.0.0.1:4000");
        assert_eq!(http_url("", 4000), "http://127.0.0.1:4000");
        assert_eq!(http_url("::", 4000), "http://[::1]:4000");
        assert_eq!(http_url("10.213.0.2", 4000), "http://10.213.0.2:4000");
        assert_eq!(connect_host("::"), "::1");
        assert_eq!(connect_host("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn listen_addresses_split_and_join() {
        assert_eq!(split_listen("127.0.0.1:8700"), Some(("127.0.0.1".into(), 8700)));
        assert_eq!(split_listen("[::1]:8700"), Some(("::1".into(), 8700)));
        assert_eq!(split_listen("localhost:8700"), None);
        assert_eq!(split_listen("127.0.0.1"), None);
        assert_eq!(join_host_port("::1", 8700), "[::1]:8700");
        assert_eq!(join_host_port("0.0.0.0", 8700), "0.0.0.0:8700");
    }
}
