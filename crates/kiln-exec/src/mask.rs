//! Masking of secret values in task output.
//!
//! Output arrives in arbitrary chunks, so a secret may be split across two
//! writes. [`Masker`] holds back the shortest tail that could still grow into
//! a secret and releases it once the next chunk (or the end) shows it cannot.
//! [`MaskedEvents`], which every executor writes its log through, also keeps
//! that log in order and in lines.

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

    /// The values of the secrets `spec` carries, for masking Kiln's own
    /// words about a task (notes, summaries) as its output is masked.
    pub fn for_task(spec: &crate::TaskSpec) -> Self {
        Self::new(spec.secrets.iter().map(|(_, value)| value.as_str()))
    }

    /// Masks `chunk` and returns what can be shown now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return chunk.to_vec();
        }
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(input.len());
        let used = self.mask_into(&input, &mut out, false);
        self.pending = input[used..].to_vec();
        out
    }

    /// Releases what was held back; call once the stream has ended.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// `text` masked as a whole, e.g. a note or a file name known at once;
    /// what this masker holds back from [`Masker::push`] is left alone.
    pub fn mask_str(&self, text: &str) -> String {
        if self.secrets.is_empty() {
            return text.to_string();
        }
        let mut out = Vec::with_capacity(text.len());
        self.mask_into(text.as_bytes(), &mut out, true);
        // Only whole values are replaced, and they are valid UTF-8 like the
        // text around them.
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Appends `input` to `out` with secrets replaced; returns how much of
    /// `input` was used. Unless `complete`, a tail that may be the start of
    /// a secret is left unused.
    fn mask_into(&self, input: &[u8], out: &mut Vec<u8>, complete: bool) -> usize {
        let mut at = 0;
        while at < input.len() {
            let rest = &input[at..];
            if let Some(secret) = self.secrets.iter().find(|s| rest.starts_with(s)) {
                out.extend_from_slice(MASK);
                at += secret.len();
            } else if !complete
                && self
                    .secrets
                    .iter()
                    .any(|s| s.len() > rest.len() && s.starts_with(rest))
            {
                // The chunk ends inside what may be a secret: wait for more.
                break;
            } else {
                out.push(input[at]);
                at += 1;
            }
        }
        at
    }
}

/// A [`TaskEvents`] sink that masks output before passing it on, and keeps
/// the log in order and in lines.
///
/// Every executor writes through one, so these hold for every log:
/// - Output and Kiln's lines reach the sink in the order they were logged:
///   when the stream changes, what the previous stream's masker held back
///   is released first.
/// - A line never mixes a step's output with Kiln's words: before a chunk of
///   the other stream, an unfinished line is ended with a `\n` (a step that
///   ends with `printf foo` does not glue `foo` to the next step's header),
///   and so is the last line when the task ends. No other byte is added.
pub struct MaskedEvents {
    inner: Arc<dyn TaskEvents>,
    state: Mutex<LogState>,
}

struct LogState {
    /// One per stream, so that what one holds back never delays the other.
    maskers: [Masker; 2],
    /// The stream of the last chunk logged, if any since it was ended.
    last: Option<LogStream>,
    /// Whether that chunk left its line unfinished.
    open_line: bool,
}

impl LogState {
    /// Releases what `stream`'s masker holds and ends its unfinished line.
    fn end(&mut self, stream: LogStream, inner: &dyn TaskEvents) {
        let mut tail = self.maskers[stream.index()].finish();
        if self.open_line {
            tail.push(b'\n');
        }
        if !tail.is_empty() {
            inner.log(stream, &tail);
        }
        self.last = None;
        self.open_line = false;
    }
}

impl MaskedEvents {
    pub fn new<'a>(
        inner: Arc<dyn TaskEvents>,
        secrets: impl IntoIterator<Item = &'a str>,
    ) -> Arc<Self> {
        Self::with_masker(inner, Masker::new(secrets))
    }

    /// Masks the values of the secrets `spec` carries.
    pub fn for_task(inner: Arc<dyn TaskEvents>, spec: &crate::TaskSpec) -> Arc<Self> {
        Self::with_masker(inner, Masker::for_task(spec))
    }

    fn with_masker(inner: Arc<dyn TaskEvents>, masker: Masker) -> Arc<Self> {
        Arc::new(MaskedEvents {
            inner,
            state: Mutex::new(LogState {
                maskers: [masker.clone(), masker],
                last: None,
                open_line: false,
            }),
        })
    }

    /// Flushes what was held back and ends an unfinished last line. Call
    /// when the task has ended.
    pub fn finish(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = state.last {
            state.end(last, self.inner.as_ref());
        }
    }
}

impl TaskEvents for MaskedEvents {
    fn log(&self, stream: LogStream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // The sink is called under the lock, so that chunks logged from two
        // places at once reach it in the order they were masked.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = state.last.filter(|last| *last != stream) {
            state.end(last, self.inner.as_ref());
        }
        let visible = state.maskers[stream.index()].push(bytes);
        state.last = Some(stream);
        state.open_line = bytes.last() != Some(&b'\n');
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
    fn whole_texts_are_masked_and_nothing_is_held_back() {
        let masker = Masker::new(["hunter2"]);
        assert_eq!(masker.mask_str("o/a-hunter2.txt"), "o/a-***.txt");
        assert_eq!(masker.mask_str("ends with hun"), "ends with hun");
        assert_eq!(Masker::new([]).mask_str("as is"), "as is");
    }

    /// Keeps what reaches it, as the sink behind an executor would.
    #[derive(Default)]
    struct Sink(Mutex<Vec<(LogStream, Vec<u8>)>>);

    impl TaskEvents for Sink {
        fn log(&self, stream: LogStream, bytes: &[u8]) {
            self.0.lock().unwrap().push((stream, bytes.to_vec()));
        }
    }

    fn log_of(sink: &Sink) -> Vec<(LogStream, String)> {
        sink.0
            .lock()
            .unwrap()
            .iter()
            .map(|(s, b)| (*s, String::from_utf8_lossy(b).into_owned()))
            .collect()
    }

    #[test]
    fn kiln_lines_never_overtake_held_output_nor_join_its_unfinished_line() {
        use LogStream::{Output, System};
        let sink = Arc::new(Sink::default());
        let events = MaskedEvents::new(sink.clone(), ["foobar"]);
        events.log(System, b"--- step 1\n");
        // `foo` may be the start of the secret, so the masker holds it.
        events.log(Output, b"x foo");
        events.log(System, b"--- step 2\n");
        events.log(Output, b"done\n");
        events.log(System, b"--- step 3\n");
        events.log(Output, b"no newline");
        events.finish();
        assert_eq!(
            log_of(&sink),
            [
                (System, "--- step 1\n".into()),
                (Output, "x ".into()),
                (Output, "foo\n".into()),
                (System, "--- step 2\n".into()),
                (Output, "done\n".into()),
                (System, "--- step 3\n".into()),
                (Output, "no newline".into()),
                (Output, "\n".into()),
            ]
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
