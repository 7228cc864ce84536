//! Secrets for `kiln run`: `--secret NAME=VALUE`, `--secret NAME` (value from
//! the environment) and `--secret-file FILE` (dotenv-style lines).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};

pub fn collect(
    flags: &[String],
    files: &[impl AsRef<Path>],
) -> anyhow::Result<HashMap<String, String>> {
    let mut secrets = HashMap::new();
    for file in files {
        let file = file.as_ref();
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read secret file {}", file.display()))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((name, value)) = line.split_once('=') else {
                bail!("{}:{}: expected NAME=VALUE", file.display(), number + 1);
            };
            let name = checked_name(name.trim())
                .with_context(|| format!("{}:{}", file.display(), number + 1))?;
            let value = checked_value(&name, unquote(value.trim()))
                .with_context(|| format!("{}:{}", file.display(), number + 1))?;
            secrets.insert(name, value);
        }
    }
    for flag in flags {
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name, value.to_string()),
            None => {
                let value = std::env::var(flag).with_context(|| {
                    format!("--secret {flag}: no `=VALUE` given and no such environment variable")
                })?;
                (flag.as_str(), value)
            }
        };
        let name = checked_name(name)?;
        let value = checked_value(&name, &value)?;
        secrets.insert(name, value);
    }
    Ok(secrets)
}

fn checked_name(name: &str) -> anyhow::Result<String> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        bail!(
            "`{name}` is not a valid secret name (letters, digits and `_`, not starting with a digit)"
        );
    }
    Ok(name.to_string())
}

/// The server's rule for a value, so that a pipeline that runs locally can
/// have its secrets set on the server as they are.
fn checked_value(name: &str, value: &str) -> anyhow::Result<String> {
    match kiln_api::fields::SecretValue::new(value) {
        Ok(_) => Ok(value.to_string()),
        Err(reason) => bail!("secret `{name}`: {reason}"),
    }
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.env");
        std::fs::write(
            &file,
            "# comment\nA=1234\nexport B=\"two words\"\n\nC='x=y+z'\n",
        )
        .unwrap();
        let secrets = collect(&["A=override".to_string()], &[&file]).unwrap();
        assert_eq!(secrets["A"], "override");
        assert_eq!(secrets["B"], "two words");
        assert_eq!(secrets["C"], "x=y+z");
        assert!(collect(&["1BAD=x".to_string()], &[] as &[&Path]).is_err());
        std::fs::write(&file, "novalue\n").unwrap();
        let err = collect(&[], &[&file]).unwrap_err().to_string();
        assert!(err.contains(":1: expected NAME=VALUE"), "{err}");
    }

    #[test]
    fn values_shorter_than_the_server_takes_are_refused() {
        let err = collect(&["PIN=123".to_string()], &[] as &[&Path])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("secret `PIN`") && err.contains("4 to 65536") && err.contains("masked"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.env");
        std::fs::write(&file, "OK=long-enough\nPIN='12'\n").unwrap();
        let err = format!("{:#}", collect(&[], &[&file]).unwrap_err());
        assert!(err.contains(":2") && err.contains("4 to 65536"), "{err}");
    }
}
