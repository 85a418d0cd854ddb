//! Hourly buckets: an event belongs to the UTC hour of its `created_at` (never the wall clock at
//! write time), and a bucket is sealed once its hour ended more than two hours ago. Pure.

pub const HOUR_MS: i64 = 3_600_000;
pub const SEAL_AFTER_MS: i64 = 2 * HOUR_MS;

/// Hours since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hour(pub i64);

impl Hour {
    pub fn of(ms: i64) -> Hour {
        Hour(ms.div_euclid(HOUR_MS))
    }
    pub fn start_ms(self) -> i64 {
        self.0 * HOUR_MS
    }
    pub fn end_ms(self) -> i64 {
        (self.0 + 1) * HOUR_MS
    }
    /// Sealed: nothing more is written into its database; late events go beside it.
    pub fn sealed_at(self, now_ms: i64) -> bool {
        now_ms >= self.end_ms() + SEAL_AFTER_MS
    }
    /// `20261129T14`.
    pub fn stem(self) -> String {
        let s = crate::clock::format_rfc3339(self.start_ms() / 1000);
        format!("{}{}{}T{}", &s[0..4], &s[5..7], &s[8..10], &s[11..13])
    }
    pub fn parse_stem(stem: &str) -> Option<Hour> {
        let b = stem.as_bytes();
        if b.len() != 11 || b[8] != b'T' || !stem[..8].bytes().chain(stem[9..].bytes()).all(|c| c.is_ascii_digit()) {
            return None;
        }
        let iso = format!("{}-{}-{}T{}:00:00Z", &stem[0..4], &stem[4..6], &stem[6..8], &stem[9..11]);
        crate::clock::parse_rfc3339_ms(&iso).map(Hour::of).filter(|h| h.stem() == stem)
    }
    pub fn db_name(self) -> String {
        format!("{}.db", self.stem())
    }
    /// Where events go when the bucket's database cannot be written.
    pub fn fallback_name(self) -> String {
        format!("{}.jsonl", self.stem())
    }
    /// Where events for an already sealed bucket go.
    pub fn late_name(self) -> String {
        format!("{}.late.jsonl", self.stem())
    }
}

/// What a file in a trace directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Db,
    Fallback,
    Late,
}

pub fn classify(file_name: &str) -> Option<(Hour, FileKind)> {
    if let Some(stem) = file_name.strip_suffix(".late.jsonl") {
        return Hour::parse_stem(stem).map(|h| (h, FileKind::Late));
    }
    if let Some(stem) = file_name.strip_suffix(".jsonl") {
        return Hour::parse_stem(stem).map(|h| (h, FileKind::Fallback));
    }
    file_name.strip_suffix(".db").and_then(Hour::parse_stem).map(|h| (h, FileKind::Db))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_rfc3339_ms;

    fn at(s: &str) -> i64 {
        parse_rfc3339_ms(s).unwrap()
    }

    #[test]
    fn the_bucket_is_the_hour_of_the_event_not_of_the_write() {
        let event = at("2026-11-29T14:59:59.999Z");
        let written = at("2026-11-29T15:00:00.001Z");
        assert_eq!(Hour::of(event).stem(), "20261129T14");
        assert_eq!(Hour::of(written).stem(), "20261129T15");
    }

    #[test]
    fn a_bucket_is_sealed_two_hours_after_its_hour_ends() {
        let h = Hour::of(at("2026-11-29T14:10:00Z"));
        assert!(!h.sealed_at(at("2026-11-29T16:59:59.999Z")));
        assert!(h.sealed_at(at("2026-11-29T17:00:00Z")));
    }

    #[test]
    fn file_names_round_trip() {
        let h = Hour::of(at("2026-01-02T03:04:05Z"));
        assert_eq!(classify(&h.db_name()), Some((h, FileKind::Db)));
        assert_eq!(classify(&h.fallback_name()), Some((h, FileKind::Fallback)));
        assert_eq!(classify(&h.late_name()), Some((h, FileKind::Late)));
        assert_eq!(classify("20261399T03.db"), None);
        assert_eq!(classify("20261129T14.db-wal"), None);
        assert_eq!(classify("notes.txt"), None);
    }
}
