//! Masking of secret values in task output.
//!
//! A secret leaks in more forms than its own bytes: tools print it base64-,
//! percent- or JSON-encoded. [`Masker`] replaces each of those forms too,
//! all found in one pass by an Aho-Corasick automaton built once per task.
//!
//! Output arrives in arbitrary chunks, so a secret may be split across two
//! writes. [`Masker`] holds back the shortest tail that could still grow into
//! a masked form (never more than the longest form less one byte) and
//! releases it once the next chunk (or the end) shows it cannot.
//! [`MaskedEvents`], which every executor writes its log through, also keeps
//! that log in order and in lines.

use std::sync::{Arc, Mutex};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use crate::{LogStream, StepResult, TaskEvents};

/// What a secret value is replaced with.
pub const MASK: &[u8] = b"***";

/// Forms derived from a value — its lines, its encodings — are masked only
/// from this many characters: a line such as `}`, or the one base64
/// character of a one-byte value, would mask that character everywhere. It
/// matches the shortest value the API and `kiln run` accept
/// (`kiln_api::fields::SecretValue`); a shorter value stored before that
/// rule is still masked as it is.
const SHORTEST_DERIVED: usize = 4;

/// A streaming replacer of secret values, and of their encoded forms, by
/// [`MASK`].
///
/// A secret that itself contains `*` may still be recognisable next to a mask
/// (`a**` before `*`); values are assumed not to be made of mask characters.
#[derive(Debug, Clone)]
pub struct Masker {
    patterns: Option<Patterns>,
    pending: Vec<u8>,
}

/// Every form of every secret; shared by the clones of one task's masker.
#[derive(Debug, Clone)]
struct Patterns {
    /// Leftmost-longest, so that overlapping forms mask as much as possible
    /// and the result does not depend on where the output was cut.
    automaton: Arc<AhoCorasick>,
    /// The same forms, sorted, to find a tail that may grow into one.
    sorted: Arc<Vec<Vec<u8>>>,
}

impl Masker {
    /// Masks each non-empty value and, for multi-line values, each of their
    /// lines too, since tools often print such values one line at a time;
    /// each in every form [`encoded_forms`] lists.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut forms: Vec<Vec<u8>> = Vec::new();
        for value in values {
            if value.is_empty() {
                continue;
            }
            if value.chars().count() < SHORTEST_DERIVED {
                forms.push(value.as_bytes().to_vec());
                continue;
            }
            forms.extend(encoded_forms(value));
            if value.contains('\n') {
                for line in value.lines().map(|l| l.trim_end_matches('\r')) {
                    if line.chars().count() >= SHORTEST_DERIVED {
                        forms.extend(encoded_forms(line));
                    }
                }
            }
        }
        forms.retain(|form| !form.is_empty());
        forms.sort_unstable();
        forms.dedup();
        let patterns = (!forms.is_empty()).then(|| Patterns {
            automaton: Arc::new(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&forms)
                    .expect("a few secrets' forms fit any automaton"),
            ),
            sorted: Arc::new(forms),
        });
        Masker {
            patterns,
            pending: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_none()
    }

    /// The values of the secrets `spec` carries, for masking Kiln's own
    /// words about a task (notes, summaries) as its output is masked.
    pub fn for_task(spec: &crate::TaskSpec) -> Self {
        Self::new(spec.secrets.iter().map(|(_, value)| value.as_str()))
    }

    /// Masks `chunk` and returns what can be shown now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let Some(patterns) = &self.patterns else {
            return chunk.to_vec();
        };
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(input.len());
        let used = patterns.mask_into(&input, &mut out, false);
        self.pending = input[used..].to_vec();
        out
    }

    /// Releases what was held back, masked; call once the stream has ended.
    pub fn finish(&mut self) -> Vec<u8> {
        let pending = std::mem::take(&mut self.pending);
        match &self.patterns {
            Some(patterns) => {
                let mut out = Vec::with_capacity(pending.len());
                patterns.mask_into(&pending, &mut out, true);
                out
            }
            None => pending,
        }
    }

    /// `text` masked as a whole, e.g. a note or a file name known at once;
    /// what this masker holds back from [`Masker::push`] is left alone.
    pub fn mask_str(&self, text: &str) -> String {
        let Some(patterns) = &self.patterns else {
            return text.to_string();
        };
        let mut out = Vec::with_capacity(text.len());
        patterns.mask_into(text.as_bytes(), &mut out, true);
        // Every form is whole UTF-8 (the values are strings, the encodings
        // ASCII), so replacing one keeps the text valid.
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Patterns {
    /// Appends `input` to `out` with every form replaced; returns how much
    /// of `input` was used. Unless `complete`, a tail that may be the start
    /// of a form is left unused.
    fn mask_into(&self, input: &[u8], out: &mut Vec<u8>, complete: bool) -> usize {
        // Every match that starts before `open` is final: what follows
        // cannot make it longer, nor an earlier one appear.
        let open = if complete {
            input.len()
        } else {
            self.open_tail(input)
        };
        let mut at = 0;
        for found in self.automaton.find_iter(input) {
            if found.start() >= open {
                break;
            }
            out.extend_from_slice(&input[at..found.start()]);
            out.extend_from_slice(MASK);
            at = found.end();
        }
        let used = at.max(open);
        out.extend_from_slice(&input[at..used]);
        used
    }

    /// Where the shortest tail of `input` starts that is a proper prefix of
    /// some form: the length of `input` if none is.
    fn open_tail(&self, input: &[u8]) -> usize {
        let longest = self.automaton.max_pattern_len();
        // A tail as long as the longest form is a prefix of none.
        let first = input.len().saturating_sub(longest - 1);
        (first..input.len())
            .find(|&start| {
                let tail = &input[start..];
                let next = self.sorted.partition_point(|form| form.as_slice() < tail);
                self.sorted
                    .get(next)
                    .is_some_and(|form| form.len() > tail.len() && form.starts_with(tail))
            })
            .unwrap_or(input.len())
    }
}

/// The forms in which `value` is masked: its bytes; base64 with the standard
/// and URL-safe alphabets, whole (padded and not) and as the characters that
/// depend on its bytes alone when it sits at offset 0, 1 or 2 of a longer
/// encoded stream; percent-encoded (RFC 3986 unreserved characters kept,
/// upper- and lower-case hex); and JSON-escaped as inside a string.
pub fn encoded_forms(value: &str) -> Vec<Vec<u8>> {
    let bytes = value.as_bytes();
    let mut forms = vec![bytes.to_vec()];
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        forms.push(engine.encode(bytes).into_bytes());
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3 {
            let mut stream = vec![0; offset];
            stream.extend_from_slice(bytes);
            let encoded = engine.encode(&stream).into_bytes();
            // Character i holds bits 6i..6i+6 of the stream; the value's
            // bits are 8*offset..8*(offset+len).
            let first = (8 * offset).div_ceil(6);
            let end = 8 * (offset + bytes.len()) / 6;
            if first < end {
                forms.push(encoded[first..end].to_vec());
            }
        }
    }
    forms.push(percent_encoded(bytes, b"0123456789ABCDEF"));
    forms.push(percent_encoded(bytes, b"0123456789abcdef"));
    let json = serde_json::to_string(value).expect("a string always serializes");
    forms.push(json.as_bytes()[1..json.len() - 1].to_vec());
    forms
}

/// `bytes` as `urlencode` writes them: unreserved characters as they are.
fn percent_encoded(bytes: &[u8], hex: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte);
        } else {
            out.extend_from_slice(&[
                b'%',
                hex[usize::from(byte >> 4)],
                hex[usize::from(byte & 15)],
            ]);
        }
    }
    out
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
        through(Masker::new(secrets.iter().copied()), chunks)
    }

    fn through(mut masker: Masker, chunks: &[&[u8]]) -> Vec<u8> {
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

    #[test]
    fn masks_encoded_forms() {
        let masker = Masker::new(["hunter2?"]);
        for (shown, masked) in [
            // base64 of the value alone, padded and not, both alphabets.
            ("aHVudGVyMj8=", "***"),
            ("aHVudGVyMj8", "***"),
            ("aHVudGVyMj8 x", "*** x"),
            // `Authorization: Basic` of `user:hunter2?`, the value at offset 2.
            ("dXNlcjpodW50ZXIyPw==", "dXNlcjp***w=="),
            ("hunter2%3F", "***"),
            ("hunter2%3f", "***"),
            ("{\"pw\":\"hunter2?\"}", "{\"pw\":\"***\"}"),
        ] {
            assert_eq!(masker.mask_str(shown), masked, "{shown}");
        }
        let quoted = Masker::new(["a\"b\\c\nd"]);
        assert_eq!(quoted.mask_str(r#"{"k":"a\"b\\c\nd"}"#), r#"{"k":"***"}"#);
        assert_eq!(
            Masker::new(["/x+y?"]).mask_str("L3greT8 -_x-y_w"),
            "*** -_x-y_w"
        );
    }

    #[test]
    fn short_values_mask_only_themselves() {
        // Stored before values had to be 4 characters: "YQ" (base64 of "a")
        // and the lines of a short value are left alone.
        let masker = Masker::new(["a", "}\nkey-line\n}"]);
        assert_eq!(masker.mask_str("YQ== a }"), "YQ== *** }");
        assert_eq!(masker.mask_str("{ key-line }"), "{ *** }");
    }

    /// Each form a secret may be shown in, embedded in `before`/`after`
    /// bytes, and the part of it that depends on the secret alone: what the
    /// masked output must never contain.
    fn shown_forms(secret: &str, before: &[u8], after: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let bytes = secret.as_bytes();
        let mut forms = vec![(bytes.to_vec(), bytes.to_vec())];
        for engine in [&STANDARD, &URL_SAFE] {
            for offset in 0..3 {
                // The secret at `offset` of a longer encoded stream, written
                // by the encoder rather than derived as the masker does.
                let prefix = &before[..offset.min(before.len())];
                let mut stream = prefix.to_vec();
                stream.extend_from_slice(bytes);
                stream.extend_from_slice(after);
                let encoded = engine.encode(&stream).into_bytes();
                let first = (8 * prefix.len()).div_ceil(6);
                let end = 8 * (prefix.len() + bytes.len()) / 6;
                forms.push((encoded.clone(), encoded[first..end].to_vec()));
            }
        }
        let mut upper = String::new();
        let mut lower = String::new();
        for &b in bytes {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                upper.push(char::from(b));
                lower.push(char::from(b));
            } else {
                upper.push_str(&format!("%{b:02X}"));
                lower.push_str(&format!("%{b:02x}"));
            }
        }
        forms.push((upper.clone().into_bytes(), upper.into_bytes()));
        forms.push((lower.clone().into_bytes(), lower.into_bytes()));
        let json = serde_json::to_string(&serde_json::json!({ "k": secret })).unwrap();
        let escaped = json.as_bytes()["{\"k\":\"".len()..json.len() - 2].to_vec();
        forms.push((json.into_bytes(), escaped));
        forms
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn check_every_form(
        secret: &str,
        before: &[u8],
        after: &[u8],
        cuts: &[usize],
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        // Built once: the automaton is what takes time in a debug build.
        let masker = Masker::new([secret]);
        for (form, inner) in shown_forms(secret, before, after) {
            let mut stream = before.to_vec();
            stream.extend_from_slice(&form);
            stream.extend_from_slice(after);
            // Every cut into two chunks…
            for cut in 0..=stream.len() {
                let out = through(masker.clone(), &[&stream[..cut], &stream[cut..]]);
                proptest::prop_assert!(
                    !contains(&out, &inner),
                    "{:?} leaked cut at {cut}: {:?}",
                    String::from_utf8_lossy(&inner),
                    String::from_utf8_lossy(&out)
                );
            }
            // …and into many.
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&stream[last..p]);
                last = p;
            }
            chunks.push(&stream[last..]);
            let out = through(masker.clone(), &chunks);
            proptest::prop_assert!(
                !contains(&out, &inner),
                "leaked: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn no_form_of_a_printable_secret_survives_any_cut(
            secret in "[ -)+-~]{4,20}",
            before in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
            after in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
            cuts in proptest::collection::vec(0usize..128, 0..8),
        ) {
            check_every_form(&secret, &before, &after, &cuts)?;
        }

        #[test]
        fn no_form_of_an_arbitrary_secret_survives_any_cut(
            // Any characters but the mask's own (see `Masker`).
            secret in "[^*]{4,12}",
            before in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
            after in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
            cuts in proptest::collection::vec(0usize..128, 0..8),
        ) {
            check_every_form(&secret, &before, &after, &cuts)?;
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
