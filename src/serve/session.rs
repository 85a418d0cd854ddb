//! What a write authenticated by the status page's session cookie must also show (issue 24): that
//! it comes from the page itself — `Sec-Fetch-Site: same-origin`, or, from a browser that sends no
//! fetch metadata, an `Origin` that is the daemon's own — and that it is JSON. A cookie goes with
//! every request a browser makes to the daemon's address, whichever page made it, and `SameSite`
//! does not tell one port of 127.0.0.1 from another: an agent's or a gateway's page on the same
//! machine could otherwise post as the operator. Requests a bearer token authenticates carry no
//! ambient credential and are not concerned (the caller asks only for the cookie's). Pure.

use axum::http::{header, HeaderMap, Method};

/// Why this request, authenticated by the session cookie, may not write (None: it may, or it is
/// no write). The caller asks only when the cookie is what authenticated it.
pub fn cross_site_write(method: &Method, headers: &HeaderMap) -> Option<String> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let get = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
    let site = get(header::HeaderName::from_static("sec-fetch-site"));
    let origin = get(header::ORIGIN);
    let own = format!("http://{}", get(header::HOST));
    let same = match (site, origin) {
        ("same-origin", _) => true,
        ("", o) => !o.is_empty() && o == own,
        _ => false,
    };
    if !same {
        return Some(format!(
            "a write with the session cookie must come from the status page itself (Sec-Fetch-Site {:?}, Origin {:?}); use a bearer token elsewhere",
            if site.is_empty() { "(none)" } else { site },
            if origin.is_empty() { "(none)" } else { origin },
        ));
    }
    let json =
        get(header::CONTENT_TYPE).split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json");
    (!json).then(|| "a write with the session cookie must be JSON (content-type: application/json)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        m
    }

    #[test]
    fn a_cookie_write_from_another_origin_or_not_json_is_refused() {
        let page = [("cookie", "fleet_session=x"), ("host", "127.0.0.1:8700"), ("content-type", "application/json")];
        let with = |extra: &[(&str, &str)]| h(&[&page[..], extra].concat());
        assert_eq!(cross_site_write(&Method::POST, &with(&[("sec-fetch-site", "same-origin")])), None);
        assert_eq!(cross_site_write(&Method::POST, &with(&[("origin", "http://127.0.0.1:8700")])), None);
        assert!(cross_site_write(&Method::POST, &with(&[("sec-fetch-site", "same-site")])).is_some(), "another port");
        assert!(cross_site_write(&Method::POST, &with(&[("origin", "http://127.0.0.1:9999")])).is_some());
        assert!(cross_site_write(&Method::POST, &with(&[])).is_some(), "no origin at all");
        let plain = h(&[
            ("cookie", "fleet_session=x"),
            ("host", "127.0.0.1:8700"),
            ("content-type", "text/plain"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(cross_site_write(&Method::POST, &plain).unwrap().contains("JSON"));
        assert_eq!(
            cross_site_write(&Method::GET, &with(&[("sec-fetch-site", "cross-site")])),
            None,
            "reads are not writes"
        );
    }
}
