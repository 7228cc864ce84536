//! Times as people read them: relative ("3 min ago") with the exact time
//! kept for `title`, and durations.

use chrono::{DateTime, Utc};

/// The exact time, in UTC, for a `title` and a `datetime` attribute's reader.
pub fn exact(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// How long before `now` `at` was.
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds();
    if seconds < 0 {
        return "just now".into();
    }
    match seconds {
        0..=9 => "just now".into(),
        10..=59 => format!("{seconds} s ago"),
        60..=3599 => format!("{} min ago", seconds / 60),
        3600..=86_399 => format!("{} h ago", seconds / 3600),
        _ => {
            let days = seconds / 86_400;
            if days == 1 {
                "yesterday".into()
            } else {
                format!("{days} days ago")
            }
        }
    }
}

/// A duration in seconds as `4s`, `2m 05s` or `1h 02m`.
pub fn duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h {:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// How long something that started at `started` took, or has taken so far
/// at `now` when it has not finished.
pub fn elapsed(
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<String> {
    let started = started?;
    Some(duration((finished.unwrap_or(now) - started).num_seconds()))
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn times_read_as_people_say_them() {
        let now = Utc::now();
        assert_eq!(relative(now, now), "just now");
        assert_eq!(relative(now - TimeDelta::seconds(42), now), "42 s ago");
        assert_eq!(relative(now - TimeDelta::minutes(3), now), "3 min ago");
        assert_eq!(relative(now - TimeDelta::hours(5), now), "5 h ago");
        assert_eq!(relative(now - TimeDelta::days(1), now), "yesterday");
        assert_eq!(relative(now - TimeDelta::days(9), now), "9 days ago");
        assert_eq!(duration(4), "4s");
        assert_eq!(duration(125), "2m 05s");
        assert_eq!(duration(3720), "1h 02m");
    }
}
