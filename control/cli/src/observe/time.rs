//! `--since` / `--until` values as Hubble takes them: a relative duration
//! before now (`3s`, `5m`, `1h30m`, `500ms`) or an absolute time (RFC 3339
//! with any fraction, `2006-01-02`, `2006-01-02T15:04Z07:00`).

use chrono::{DateTime, NaiveDate, Utc};

/// A Go-style duration (`1h30m`, `2.5s`, `300ms`) in nanoseconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Some(total as u64)
}

/// A `--since`/`--until` value as Unix ns, relative ones counted back from
/// `now_ns`. The error names the flag.
pub fn parse_time_flag(flag: &str, text: &str, now_ns: u64) -> Result<u64, String> {
    if let Some(ago) = parse_duration(text) {
        return Ok(now_ns.saturating_sub(ago));
    }
    if let Ok(t) = sluice_api::hubble::parse_time(text) {
        return Ok(t);
    }
    let absolute = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M%:z")
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M%#z"))
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        });
    absolute
        .and_then(|t| t.timestamp_nanos_opt())
        .and_then(|ns| u64::try_from(ns).ok())
        .ok_or_else(|| {
            format!("--{flag} {text:?}: expected a duration (5m, 1h30m) or a time (RFC 3339, 2006-01-02)")
        })
}

/// Now, as Unix ns.
pub fn now_ns() -> u64 {
    Utc::now()
        .timestamp_nanos_opt()
        .and_then(|ns| u64::try_from(ns).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000_000_000;

    #[test]
    fn durations_follow_go_syntax() {
        assert_eq!(parse_duration("3s"), Some(3_000_000_000));
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("1.5m"), Some(90_000_000_000));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5d"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn relative_and_absolute_times() {
        assert_eq!(
            parse_time_flag("since", "5m", NOW).unwrap(),
            NOW - 300_000_000_000
        );
        assert_eq!(
            parse_time_flag("since", "2026-11-18T11:06:40.5Z", NOW).unwrap(),
            1_795_000_000_500_000_000
        );
        assert_eq!(
            parse_time_flag("until", "2026-11-18T12:06:40+01:00", NOW).unwrap(),
            1_795_000_000_000_000_000
        );
        assert_eq!(
            parse_time_flag("until", "2026-11-18T12:06+01:00", NOW).unwrap(),
            1_795_000_000_000_000_000 - 40_000_000_000
        );
        assert_eq!(
            parse_time_flag("since", "2026-11-18", NOW).unwrap(),
            1_794_960_000_000_000_000
        );
        let err = parse_time_flag("since", "yesterday", NOW).unwrap_err();
        assert!(
            err.contains("--since") && err.contains("yesterday"),
            "{err}"
        );
    }
}
