//! Archive ids: `<agent>-<UTC timestamp>`.

/// `alice-20261129T070000Z`: the agent and when it was archived (UTC, to the second).
pub fn archive_id(agent: &str, secs: i64) -> String {
    format!("{agent}-{}", stamp(secs))
}

fn stamp(secs: i64) -> String {
    // 2026-11-29T07:00:00Z → 20261129T070000Z
    crate::clock::format_rfc3339(secs).chars().filter(|c| *c != '-' && *c != ':').collect()
}

/// The agent an archive id names (`alice-20261129T070000Z` → `alice`), if it is one.
pub fn agent_of(id: &str) -> Option<&str> {
    let (agent, ts) = id.rsplit_once('-')?;
    let ok = ts.len() == 16
        && ts.as_bytes()[8] == b'T'
        && ts.ends_with('Z')
        && ts.chars().enumerate().all(|(i, c)| i == 8 || i == 15 || c.is_ascii_digit());
    (ok && !agent.is_empty()).then_some(agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_the_agent_and_the_second() {
        let id = archive_id("data-bot", 1_796_022_000);
        assert_eq!(id, "data-bot-20261130T070000Z");
        assert_eq!(agent_of(&id), Some("data-bot"));
        assert_eq!(agent_of("alice-2026"), None);
        assert_eq!(agent_of("-20261201T070000Z"), None);
        assert_eq!(agent_of("alice-20261201T07000xZ"), None);
    }
}
