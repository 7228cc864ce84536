//! Masking of secret values in task output.
//!
//! Output arrives in arbitrary chunks, so a secret may be split across two
//! writes. [`Masker`] holds back the shortest tail that could still grow into
//! a secret and releases it once the next chunk (or the end) shows it cannot.

use std::sync::{Arc, Mutex};

use crate::{LogStream, StepResult, TaskEvents};

/// What a secret value is replaced with.
pub const MASK: &[u8] = b"***";

/// A streaming replacer of secret values by [`MASK`].
///
/// A secret that itself contains `*` may still be recognisable next to a mask
/// (`a**` before `*`); values are assumed not to be made of mask characters.
#[derive(Debug, Clone)]
pub struct Masker {
    /// Longest first, so that overlapping values mask as much as possible.
    secrets: Vec<Vec<u8>>,
    pending: Vec<u8>,
}

impl Masker {
    /// Masks each non-empty value and, for multi-line values, each of their
    /// lines too, since tools often print such values one line at a time.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets: Vec<Vec<u8>> = Vec::new();
        for value in values {
            let mut push = |candidate: &str| {
                if !candidate.is_empty() && !secrets.iter().any(|s| s == candidate.as_bytes()) {
                    secrets.push(candidate.as_bytes().to_vec());
                }
            };
            push(value);
            if value.contains('\n') {
                for line in value.lines().map(|l| l.trim_end_matches('\r')) {
                    push(line);
                }
            }
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Masker {
            secrets,
            pending: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Masks `chunk` and returns what can be shown now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return chunk.to_vec();
        }
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(input.len());
        let mut at = 0;
        while at < input.len() {
            let rest = &input[at..];
            if let Some(secret) = self.secrets.iter().find(|s| rest.starts_with(s)) {
                out.extend_from_slice(MASK);
                at += secret.len();
            } else if self
                .secrets
                .iter()
                .any(|s| s.len() > rest.len() && s.starts_with(rest))
            {
                // The chunk ends inside what may be a secret: wait for more.
                self.pending.extend_from_slice(rest);
                break;
            } else {
                out.push(input[at]);
                at += 1;
            }
        }
        out
    }

    /// Releases what was held back; call once the stream has ended.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// A [`TaskEvents`] sink that masks output before passing it on, with one
/// [`Masker`] per stream so stdout and stderr never hold each other back.
pub struct MaskedEvents {
    inner: Arc<dyn TaskEvents>,
    maskers: Mutex<[Masker; 3]>,
}

impl MaskedEvents {
    pub fn new<'a>(
        inner: Arc<dyn TaskEvents>,
        secrets: impl IntoIterator<Item = &'a str>,
    ) -> Arc<Self> {
        let masker = Masker::new(secrets);
        Arc::new(MaskedEvents {
            inner,
            maskers: Mutex::new([masker.clone(), masker.clone(), masker]),
        })
    }

    /// Masks the values of the secrets `spec` carries.
    pub fn for_task(inner: Arc<dyn TaskEvents>, spec: &crate::TaskSpec) -> Arc<Self> {
        Self::new(inner, spec.secrets.iter().map(|(_, value)| value.as_str()))
    }

    /// Flushes what each stream held back. Call when the task has ended.
    pub fn finish(&self) {
        let tails: Vec<(LogStream, Vec<u8>)> = {
            let mut maskers = self.maskers.lock().unwrap_or_else(|e| e.into_inner());
            LogStream::ALL
                .iter()
                .zip(maskers.iter_mut())
                .map(|(s, m)| (*s, m.finish()))
                .collect()
        };
        for (stream, tail) in tails {
            if !tail.is_empty() {
                self.inner.log(stream, &tail);
            }
        }
    }
}

impl TaskEvents for MaskedEvents {
    fn log(&self, stream: LogStream, bytes: &[u8]) {
        let visible = {
            let mut maskers = self.maskers.lock().unwrap_or_else(|e| e.into_inner());
            maskers[stream.index()].push(bytes)
        };
        if !visible.is_empty() {
            self.inner.log(stream, &visible);
        }
    }

    fn ready(&self) -> futures_util::future::BoxFuture<'_, ()> {
        self.inner.ready()
    }

    fn step_started(&self, index: usize, name: &str) {
        self.inner.step_started(index, name);
    }

    fn step_finished(&self, index: usize, result: &StepResult) {
        self.inner.step_finished(index, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_chunks(secrets: &[&str], chunks: &[&[u8]]) -> Vec<u8> {
        let mut masker = Masker::new(secrets.iter().copied());
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(masker.push(chunk));
        }
        out.extend(masker.finish());
        out
    }

    #[test]
    fn masks_whole_and_split_secrets() {
        assert_eq!(mask_chunks(&["hunter2"], &[b"pw=hunter2\n"]), b"pw=***\n");
        assert_eq!(
            mask_chunks(&["hunter2"], &[b"pw=hun", b"ter2!"]),
            b"pw=***!"
        );
        assert_eq!(
            mask_chunks(&["hunter2"], &[b"h", b"u", b"n", b"t", b"e", b"r", b"2"]),
            b"***"
        );
        assert_eq!(mask_chunks(&["hunter2"], &[b"hunt", b"ing"]), b"hunting");
        assert_eq!(
            mask_chunks(&["hunter2"], &[b"ends with hun"]),
            b"ends with hun"
        );
    }

    #[test]
    fn masks_lines_of_multiline_secrets() {
        let key = "-----BEGIN-----\nAAAABBBB\n-----END-----";
        assert_eq!(mask_chunks(&[key], &[b"x AAAABBBB y"]), b"x *** y");
    }

    proptest::proptest! {
        #[test]
        fn masked_output_never_contains_a_secret(
            secret in "[a-zA-Z0-9=+/_-]{1,24}",
            noise in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..16), 0..8),
            cuts in proptest::collection::vec(0usize..64, 0..8),
        ) {
            // Interleave the secret with noise, then cut the stream at arbitrary points.
            let mut stream = Vec::new();
            for part in &noise {
                stream.extend_from_slice(part);
                stream.extend_from_slice(secret.as_bytes());
            }
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points { chunks.push(&stream[last..p]); last = p; }
            chunks.push(&stream[last..]);
            let out = mask_chunks(&[&secret], &chunks);
            let found = out.windows(secret.len()).any(|w| w == secret.as_bytes());
            proptest::prop_assert!(!found, "secret leaked: {:?}", String::from_utf8_lossy(&out));
        }

        #[test]
        fn text_without_secrets_passes_unchanged(
            text in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            cuts in proptest::collection::vec(0usize..256, 0..6),
        ) {
            let secret = "\u{1}never-in-text\u{1}";
            proptest::prop_assume!(!text.windows(secret.len()).any(|w| w == secret.as_bytes()));
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points { chunks.push(&text[last..p]); last = p; }
            chunks.push(&text[last..]);
            proptest::prop_assert_eq!(mask_chunks(&[secret], &chunks), text);
        }
    }
}
