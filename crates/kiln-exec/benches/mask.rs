//! What masking costs: MB/s through [`Masker`] with 0, 5 and 50 secrets.
//!
//! `cargo bench -p kiln-exec --bench mask` pushes 64 MiB of log-like text
//! (no secret in it, the common case) in 8 KiB chunks, as a pipe delivers a
//! step's output, and reports the throughput of each set of secrets.

use std::time::Instant;

use kiln_exec::mask::Masker;

const TOTAL: usize = 64 << 20;
const CHUNK: usize = 8 << 10;

fn main() {
    let line = b"   Compiling kiln-exec v0.1.0 (/work/crates/kiln-exec) in 0.42s: ok\n";
    let text: Vec<u8> = line.iter().copied().cycle().take(CHUNK * 16).collect();
    for count in [0, 5, 50] {
        let secrets: Vec<String> = (0..count)
            .map(|i| format!("s3cr3t-{i:02}-Zm9vYmFy+/={i}"))
            .collect();
        let mut masker = Masker::new(secrets.iter().map(String::as_str));
        let started = Instant::now();
        let mut shown = 0;
        let mut pushed = 0;
        while pushed < TOTAL {
            for chunk in text.chunks(CHUNK) {
                shown += masker.push(chunk).len();
                pushed += chunk.len();
            }
        }
        shown += masker.finish().len();
        assert_eq!(shown, pushed, "the text holds no secret");
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{count:>2} secrets: {:>7.0} MB/s",
            pushed as f64 / 1e6 / seconds
        );
    }
}
