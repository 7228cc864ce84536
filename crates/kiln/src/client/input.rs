//! Secret values the client commands read — a job's secret, a user's
//! password — which are never taken from the command line (where other
//! users and the shell's history would see them): standard input, typed at
//! a hidden prompt when that is a terminal.

use std::io::{IsTerminal, Read};

use anyhow::{Context, bail};

/// Largest secret value read from standard input.
const MAX_SECRET_BYTES: u64 = 1 << 20;

/// A secret value from standard input: one line typed after `prompt` with
/// echo off when standard input is a terminal, else all of it (so a value
/// may span lines). One trailing line break is dropped: `echo value |`
/// adds one that is not part of it. `what` names the value in errors, e.g.
/// "the secret". The value may be empty: the caller says what to do then.
pub(super) async fn read_secret_input(prompt: &str, what: &str) -> anyhow::Result<String> {
    let value = if std::io::stdin().is_terminal() {
        eprint!("{prompt} (input hidden): ");
        read_hidden_line(what).await?
    } else {
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(MAX_SECRET_BYTES + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {what} from standard input"))?;
        if bytes.len() as u64 > MAX_SECRET_BYTES {
            bail!("{what} is larger than {MAX_SECRET_BYTES} bytes");
        }
        String::from_utf8(bytes)
            .with_context(|| format!("{what} on standard input is not UTF-8"))?
    };
    Ok(match value.strip_suffix('\n') {
        Some(line) => line.strip_suffix('\r').unwrap_or(line).to_string(),
        None => value,
    })
}

/// One line from the terminal with echo off, so the secret never shows on
/// screen; the terminal is restored even on Ctrl-C.
#[cfg(unix)]
async fn read_hidden_line(what: &str) -> anyhow::Result<String> {
    use std::os::fd::AsRawFd;
    let fd = std::io::stdin().as_raw_fd();
    let mut original = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: `fd` is open for the life of the process and `original` is a
    // valid place for tcgetattr to write a termios to.
    if unsafe { libc::tcgetattr(fd, original.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot read the terminal's settings");
    }
    // SAFETY: tcgetattr succeeded, so it filled `original` in.
    let original = unsafe { original.assume_init() };
    let mut hidden = original;
    hidden.c_lflag &= !libc::ECHO;
    hidden.c_lflag |= libc::ECHONL;
    // SAFETY: `hidden` is a valid termios copied from the terminal's own.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &hidden) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot turn the terminal's echo off");
    }
    let restore = move || {
        // SAFETY: as above; restores the settings read at the start.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &original) };
    };
    let read = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    });
    tokio::select! {
        line = read => {
            restore();
            Ok(line
                .context("the terminal reader stopped")?
                .with_context(|| format!("cannot read {what}"))?)
        }
        _ = tokio::signal::ctrl_c() => {
            restore();
            eprintln!();
            std::process::exit(crate::run_command::EXIT_INTERRUPTED);
        }
    }
}

#[cfg(not(unix))]
async fn read_hidden_line(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .with_context(|| format!("cannot read {what}"))?;
    Ok(line)
}
