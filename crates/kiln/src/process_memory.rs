//! Wiping a secret from what `/proc/<pid>/cmdline` and `/proc/<pid>/environ`
//! show of this process.
//!
//! Both files are read from the process's own memory, the argument and
//! environment strings the kernel copied onto the stack at `exec`.
//! `std::env::args` reads those same strings, so what needs the secret must
//! have copied it first (the parsed command line has); `std::env::var`
//! has copies of its own. `/proc/self/stat` says where they are
//! (`arg_start`, `arg_end`, `env_start`, `env_end`) and `/proc/self/mem`
//! writes them.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Overwrites every occurrence of `secret` in this process's command line
/// and original environment with `*`. An empty secret changes nothing.
pub fn wipe(secret: &[u8]) -> io::Result<()> {
    if secret.is_empty() {
        return Ok(());
    }
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let areas = areas(&stat).ok_or_else(|| io::Error::other("unexpected /proc/self/stat"))?;
    let mut mem = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")?;
    for (start, end) in areas {
        if end <= start {
            continue;
        }
        let mut bytes = vec![0; (end - start) as usize];
        mem.seek(SeekFrom::Start(start))?;
        mem.read_exact(&mut bytes)?;
        let mut changed = false;
        let mut at = 0;
        while let Some(found) = find(&bytes[at..], secret) {
            let from = at + found;
            bytes[from..from + secret.len()].fill(b'*');
            at = from + secret.len();
            changed = true;
        }
        if changed {
            mem.seek(SeekFrom::Start(start))?;
            mem.write_all(&bytes)?;
        }
    }
    Ok(())
}

/// (start, end) of the arguments and of the environment, from the text of
/// `/proc/self/stat`: fields 48–51, counted after the `(comm)` field that
/// may itself hold spaces.
fn areas(stat: &str) -> Option<[(u64, u64); 2]> {
    let after = &stat[stat.rfind(')')? + 2..];
    // `after` starts at field 3 (state).
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(48 - 3)
        .take(4)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    match fields[..] {
        [arg_start, arg_end, env_start, env_end] => {
            Some([(arg_start, arg_end), (env_start, env_end)])
        }
        _ => None,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    /// This test process's own command line loses the secret, and nothing
    /// else of it changes.
    #[test]
    fn a_secret_leaves_cmdline_and_environ() {
        let original = std::fs::read("/proc/self/cmdline").unwrap();
        // Every test binary's command line holds its path; wipe a piece of it.
        let exe = std::env::args().next().unwrap();
        let piece = exe.rsplit('/').next().unwrap().as_bytes().to_vec();
        assert!(original.windows(piece.len()).any(|w| w == piece));
        super::wipe(&piece).unwrap();
        let after = std::fs::read("/proc/self/cmdline").unwrap();
        assert!(!after.windows(piece.len()).any(|w| w == piece));
        assert_eq!(after.len(), original.len());
        let stars = "*".repeat(piece.len());
        assert_eq!(
            String::from_utf8_lossy(&after).replace(&stars, std::str::from_utf8(&piece).unwrap()),
            String::from_utf8_lossy(&original)
        );
    }
}
