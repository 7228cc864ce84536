use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A span of time written as in the pipeline file: `90s`, `20m`, `1h30m`,
/// `500ms`, `30d`. A bare number means seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

const UNITS: [(&str, u64); 6] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
    ("w", 604_800_000),
];

/// Longest duration accepted (~10 years): keeps arithmetic on deadlines far from overflow.
const MAX_MILLIS: u64 = 10 * 366 * 86_400_000;

impl Duration {
    pub fn as_std(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let expected =
            || format!("expected a duration like `30s`, `20m` or `1h30m`, found `{text}`");
        let text_trimmed = text.trim();
        if text_trimmed.is_empty() {
            return Err(expected());
        }
        if let Ok(seconds) = text_trimmed.parse::<u64>() {
            return checked(seconds.checked_mul(1000), text);
        }
        let mut total: u64 = 0;
        let mut rest = text_trimmed;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(expected());
            }
            let number: u64 = rest[..digits].parse().map_err(|_| expected())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let Some(&(_, millis)) = UNITS.iter().find(|(name, _)| *name == unit) else {
                return Err(expected());
            };
            total = number
                .checked_mul(millis)
                .and_then(|part| total.checked_add(part))
                .ok_or_else(|| too_long(text))?;
        }
        checked(Some(total), text)
    }
}

fn checked(millis: Option<u64>, text: &str) -> Result<Duration, String> {
    match millis {
        Some(millis) if millis <= MAX_MILLIS => {
            Ok(Duration(std::time::Duration::from_millis(millis)))
        }
        _ => Err(too_long(text)),
    }
}

fn too_long(text: &str) -> String {
    format!("duration `{text}` is too long (at most 3660d)")
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut millis = self.0.as_millis() as u64;
        if millis == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            if millis >= size {
                write!(f, "{}{unit}", millis / size)?;
                millis %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like `30s`, `20m` or `1h30m`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                checked(v.checked_mul(1000), &v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map_err(|_| {
                        E::custom(format!("expected a duration, found negative number {v}"))
                    })
                    .and_then(|v| self.visit_u64(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration: a number of seconds, or numbers with units d, h, m, s, ms, e.g. `20m` or `1h30m`.",
            "anyOf": [
                { "type": "string", "pattern": "^\\s*([0-9]+(d|h|m|s|ms|w))+\\s*$|^\\s*[0-9]+\\s*$" },
                { "type": "integer", "minimum": 0 }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(text: &str) -> u64 {
        text.parse::<Duration>().unwrap().0.as_millis() as u64
    }

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(millis("90"), 90_000);
        assert_eq!(millis("1h30m"), 5_400_000);
        assert_eq!(millis("500ms"), 500);
        assert_eq!(millis("2d"), 172_800_000);
        assert_eq!(millis("1w"), 604_800_000);
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        for bad in [
            "",
            "h",
            "10x",
            "1.5h",
            "-3s",
            "99999999999999999999d",
            "5000d",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn displays_round_trip() {
        for text in ["1h30m", "20m", "45s", "1d2h", "250ms"] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.to_string(), text);
        }
    }
}
