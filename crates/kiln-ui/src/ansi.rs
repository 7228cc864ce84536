//! ANSI SGR escape sequences (colours, bold, …) of a log turned into HTML
//! spans, one line at a time, with the style carried from line to line as
//! a terminal would. Everything else a terminal would interpret (cursor
//! moves, titles, other control bytes) is dropped, and the text is
//! HTML-escaped: whatever bytes a task printed, the output is well-formed
//! HTML with only the spans this module writes, and rendering never panics.
//!
//! The 16 basic colours become classes (`f1` is red text, `b4` a blue
//! background, `f9` bright red), which the stylesheet gives colours that
//! read on both light and dark backgrounds; 256-colour and true-colour
//! codes become inline `style`s.

use std::fmt::Write;

/// A colour of text or background.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Color {
    #[default]
    Default,
    /// 0–255 of the xterm palette.
    Index(u8),
    Rgb(u8, u8, u8),
}

/// What the SGR codes seen so far set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    fg: Color,
    bg: Color,
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
}

/// The longest run of parameter bytes read in one escape sequence; a
/// longer one is dropped whole (no real program sends such).
const MAX_SEQUENCE: usize = 256;

/// Renders lines one after another, carrying the style across them.
#[derive(Debug, Default, Clone)]
pub struct AnsiRenderer {
    style: Style,
}

impl AnsiRenderer {
    pub fn new() -> AnsiRenderer {
        AnsiRenderer::default()
    }

    /// Appends `line` (without its newline) to `out` as HTML. A carriage
    /// return in the middle of a line (a progress bar) keeps only what was
    /// written after it, as a terminal shows it.
    pub fn line(&mut self, line: &[u8], out: &mut String) {
        let mut html = String::with_capacity(line.len() + 16);
        // The style of the span open in `html`, if one is.
        let mut open: Option<Style> = None;
        let mut i = 0;
        let mut text_start = 0;
        while i < line.len() {
            let byte = line[i];
            if byte == 0x1b || byte == b'\r' || (byte < 0x20 && byte != b'\t') || byte == 0x7f {
                self.text(&line[text_start..i], &mut html, &mut open);
                match byte {
                    0x1b => i = self.escape(line, i),
                    b'\r' => {
                        i += 1;
                        // Only a carriage return with text after it erases.
                        if line[i..].iter().any(|&b| b != b'\r') {
                            html.clear();
                            open = None;
                        }
                    }
                    _ => i += 1,
                }
                text_start = i;
            } else {
                i += 1;
            }
        }
        self.text(&line[text_start..], &mut html, &mut open);
        if open.is_some() {
            html.push_str("</span>");
        }
        out.push_str(&html);
    }

    /// Applies the escape sequences of `line` (without its newline) as
    /// [`AnsiRenderer::line`] would, without writing anything: how the
    /// line index and a window's lines before the ones shown carry the
    /// style at memory speed (only escapes are looked at).
    pub fn advance(&mut self, line: &[u8]) {
        let mut i = 0;
        while let Some(found) = memchr::memchr(0x1b, &line[i..]) {
            i = self.escape(line, i + found);
            if i >= line.len() {
                break;
            }
        }
    }

    /// The style in force, as a short token (`0` for none) that
    /// [`AnsiRenderer::from_state`] reads back: what a checkpoint of the
    /// line index keeps.
    pub fn state(&self) -> String {
        let style = self.style;
        if style == Style::default() {
            return "0".to_string();
        }
        let mut bytes = Vec::with_capacity(9);
        for color in [style.fg, style.bg] {
            bytes.extend_from_slice(&match color {
                Color::Default => [0, 0, 0, 0],
                Color::Index(n) => [1, n, 0, 0],
                Color::Rgb(r, g, b) => [2, r, g, b],
            });
        }
        bytes.push(
            u8::from(style.bold)
                | u8::from(style.dim) << 1
                | u8::from(style.italic) << 2
                | u8::from(style.underline) << 3,
        );
        let mut token = String::with_capacity(18);
        for byte in bytes {
            let _ = write!(token, "{byte:02x}");
        }
        token
    }

    /// A renderer in the style a [`AnsiRenderer::state`] token names;
    /// `None` for a token it did not write.
    pub fn from_state(token: &str) -> Option<AnsiRenderer> {
        if token == "0" {
            return Some(AnsiRenderer::new());
        }
        if token.len() != 18 || !token.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 9];
        for (k, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&token[2 * k..2 * k + 2], 16).ok()?;
        }
        let color = |b: &[u8]| match b[0] {
            0 => Some(Color::Default),
            1 => Some(Color::Index(b[1])),
            2 => Some(Color::Rgb(b[1], b[2], b[3])),
            _ => None,
        };
        let flags = bytes[8];
        Some(AnsiRenderer {
            style: Style {
                fg: color(&bytes[0..4])?,
                bg: color(&bytes[4..8])?,
                bold: flags & 1 != 0,
                dim: flags & 2 != 0,
                italic: flags & 4 != 0,
                underline: flags & 8 != 0,
            },
        })
    }

    /// Whether a style other than the default is in force (for tests and
    /// for callers that want to know a log ends coloured).
    pub fn is_styled(&self) -> bool {
        self.style != Style::default()
    }

    /// Writes `text` in the current style.
    fn text(&self, text: &[u8], html: &mut String, open: &mut Option<Style>) {
        if text.is_empty() {
            return;
        }
        let wanted = (self.style != Style::default()).then_some(self.style);
        if *open != wanted {
            if open.is_some() {
                html.push_str("</span>");
            }
            if let Some(style) = wanted {
                open_span(style, html);
            }
            *open = wanted;
        }
        escape_into(&String::from_utf8_lossy(text), html);
    }

    /// Reads the escape sequence at `line[start]` (an ESC), applies it if it
    /// sets colours, and returns where the text after it starts.
    fn escape(&mut self, line: &[u8], start: usize) -> usize {
        let Some(&kind) = line.get(start + 1) else {
            return line.len();
        };
        match kind {
            b'[' => {
                // CSI: parameters 0x30–0x3F, intermediates 0x20–0x2F, a final 0x40–0x7E.
                let params_start = start + 2;
                let mut j = params_start;
                while j < line.len() && (0x20..=0x3f).contains(&line[j]) {
                    j += 1;
                }
                let Some(&last) = line.get(j) else {
                    return line.len();
                };
                if !(0x40..=0x7e).contains(&last) {
                    // Not a sequence after all: drop the ESC and `[` only.
                    return params_start;
                }
                if last == b'm' && j - params_start <= MAX_SEQUENCE {
                    self.sgr(&line[params_start..j]);
                }
                j + 1
            }
            b']' => {
                // OSC (a title, a hyperlink): up to BEL or ESC `\`.
                let mut j = start + 2;
                while j < line.len() {
                    if line[j] == 0x07 {
                        return j + 1;
                    }
                    if line[j] == 0x1b && line.get(j + 1) == Some(&b'\\') {
                        return j + 2;
                    }
                    j += 1;
                }
                line.len()
            }
            // ESC, intermediates 0x20–0x2F, a final byte: a charset
            // (`ESC ( B`), a keypad mode (`ESC =`)…
            _ => {
                let mut j = start + 1;
                while j < line.len() && (0x20..=0x2f).contains(&line[j]) {
                    j += 1;
                }
                (j + 1).min(line.len())
            }
        }
    }

    /// Applies the parameters of an SGR sequence (`ESC [ … m`).
    fn sgr(&mut self, params: &[u8]) {
        // Only digits and separators: private sequences (`ESC [ ? … m`) are ignored.
        if !params
            .iter()
            .all(|b| b.is_ascii_digit() || *b == b';' || *b == b':')
        {
            return;
        }
        let codes: Vec<u32> = params
            .split(|b| *b == b';' || *b == b':')
            .map(|digits| {
                digits.iter().fold(0u32, |n, d| {
                    n.saturating_mul(10).saturating_add(u32::from(d - b'0'))
                })
            })
            .collect();
        let mut k = 0;
        while k < codes.len() {
            let code = codes[k];
            k += 1;
            let style = &mut self.style;
            match code {
                0 => *style = Style::default(),
                1 => style.bold = true,
                2 => style.dim = true,
                3 => style.italic = true,
                4 => style.underline = true,
                22 => {
                    style.bold = false;
                    style.dim = false;
                }
                23 => style.italic = false,
                24 => style.underline = false,
                30..=37 => style.fg = Color::Index((code - 30) as u8),
                39 => style.fg = Color::Default,
                40..=47 => style.bg = Color::Index((code - 40) as u8),
                49 => style.bg = Color::Default,
                90..=97 => style.fg = Color::Index((code - 90 + 8) as u8),
                100..=107 => style.bg = Color::Index((code - 100 + 8) as u8),
                38 | 48 => {
                    let (color, used) = extended(&codes[k..]);
                    k += used;
                    if let Some(color) = color {
                        if code == 38 {
                            style.fg = color;
                        } else {
                            style.bg = color;
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// The colour of `38;5;N` or `38;2;R;G;B` (after the 38), and how many
/// codes it took.
fn extended(codes: &[u32]) -> (Option<Color>, usize) {
    let byte = |n: u32| u8::try_from(n).ok();
    match codes {
        [5, n, ..] => (byte(*n).map(Color::Index), 2),
        [2, r, g, b, ..] => (
            match (byte(*r), byte(*g), byte(*b)) {
                (Some(r), Some(g), Some(b)) => Some(Color::Rgb(r, g, b)),
                _ => None,
            },
            4,
        ),
        [5] | [2, ..] => (None, codes.len()),
        _ => (None, 0),
    }
}

/// The RGB of a colour of the xterm 256-colour palette above 15.
fn palette(n: u8) -> (u8, u8, u8) {
    const LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];
    if n >= 232 {
        let grey = 8 + 10 * (n - 232);
        (grey, grey, grey)
    } else {
        let n = n.saturating_sub(16);
        (
            LEVELS[usize::from(n / 36)],
            LEVELS[usize::from(n / 6 % 6)],
            LEVELS[usize::from(n % 6)],
        )
    }
}

fn open_span(style: Style, html: &mut String) {
    let mut classes = Vec::new();
    let mut css = String::new();
    for (color, class, property) in [(style.fg, 'f', "color"), (style.bg, 'b', "background")] {
        match color {
            Color::Default => {}
            Color::Index(n) if n < 16 => classes.push(format!("{class}{n}")),
            Color::Index(n) => {
                let (r, g, b) = palette(n);
                let _ = write!(css, "{property}:#{r:02x}{g:02x}{b:02x};");
            }
            Color::Rgb(r, g, b) => {
                let _ = write!(css, "{property}:#{r:02x}{g:02x}{b:02x};");
            }
        }
    }
    for (on, class) in [
        (style.bold, "sb"),
        (style.dim, "sd"),
        (style.italic, "si"),
        (style.underline, "su"),
    ] {
        if on {
            classes.push(class.to_string());
        }
    }
    html.push_str("<span");
    if !classes.is_empty() {
        let _ = write!(html, " class=\"{}\"", classes.join(" "));
    }
    if !css.is_empty() {
        let _ = write!(html, " style=\"{css}\"");
    }
    html.push('>');
}

/// `text` with the five characters HTML gives meaning to escaped.
pub fn escape_into(text: &str, html: &mut String) {
    for c in text.chars() {
        match c {
            '&' => html.push_str("&amp;"),
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '"' => html.push_str("&quot;"),
            '\'' => html.push_str("&#39;"),
            c => html.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn render(lines: &[&[u8]]) -> Vec<String> {
        let mut renderer = AnsiRenderer::new();
        lines
            .iter()
            .map(|line| {
                let mut out = String::new();
                renderer.line(line, &mut out);
                out
            })
            .collect()
    }

    #[test]
    fn colours_become_classes_and_reset_ends_them() {
        assert_eq!(
            render(&[b"\x1b[31mred\x1b[0m plain"]),
            ["<span class=\"f1\">red</span> plain"]
        );
        assert_eq!(
            render(&[b"\x1b[1;92;44mok"]),
            ["<span class=\"f10 b4 sb\">ok</span>"]
        );
        assert_eq!(
            render(&[b"\x1b[38;5;208mo\x1b[48;2;1;2;3mx"]),
            [
                "<span style=\"color:#ff8700;\">o</span><span style=\"color:#ff8700;background:#010203;\">x</span>"
            ]
        );
    }

    #[test]
    fn the_style_carries_across_lines() {
        assert_eq!(
            render(&[b"\x1b[32mgreen", b"still green\x1b[39m", b"plain"]),
            [
                "<span class=\"f2\">green</span>",
                "<span class=\"f2\">still green</span>",
                "plain"
            ]
        );
    }

    #[test]
    fn html_is_escaped_and_other_sequences_dropped() {
        assert_eq!(
            render(&[b"<script>alert('x')</script> & \"q\""]),
            ["&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"]
        );
        assert_eq!(
            render(&[b"\x1b]0;title\x07a\x1b[2Kb\x1b(Bc\x07d"]),
            ["abcd"]
        );
        assert_eq!(render(&[b"10%\r50%\r100%"]), ["100%"]);
        assert_eq!(render(&[b"windows\r"]), ["windows"]);
        assert_eq!(
            render(&[b"bad \xff\xfe utf8"]),
            ["bad \u{fffd}\u{fffd} utf8"]
        );
        assert_eq!(render(&[b"cut \x1b[3"]), ["cut "]);
    }

    /// What is left of rendered HTML once this module's spans are taken
    /// out: must hold no markup.
    fn without_spans(html: &str) -> String {
        let mut rest = html;
        let mut text = String::new();
        let mut depth = 0i64;
        while let Some(at) = rest.find('<') {
            text.push_str(&rest[..at]);
            let end = rest[at..].find('>').expect("a tag is closed") + at;
            let tag = &rest[at..=end];
            if tag == "</span>" {
                depth -= 1;
            } else {
                assert!(tag.starts_with("<span"), "unexpected tag {tag}");
                depth += 1;
            }
            assert!((0..=1).contains(&depth), "spans nest: {html}");
            rest = &rest[end + 1..];
        }
        assert_eq!(depth, 0, "a span is left open: {html}");
        text.push_str(rest);
        text
    }

    fn unescape(text: &str) -> String {
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    }

    proptest! {
        /// Any bytes at all: no panic, balanced spans, no markup but ours.
        #[test]
        fn any_bytes_render_to_well_formed_html(lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..8)) {
            let mut renderer = AnsiRenderer::new();
            for line in &lines {
                let mut out = String::new();
                renderer.line(line, &mut out);
                let text = without_spans(&out);
                prop_assert!(!text.contains('<') && !text.contains('>'));
            }
        }

        /// Escape-heavy input: sequences cut anywhere still render.
        #[test]
        fn sequences_cut_anywhere_render(parts in prop::collection::vec(prop_oneof![
            Just(b"\x1b[".to_vec()), Just(b"31".to_vec()), Just(b";".to_vec()), Just(b"m".to_vec()),
            Just(b"38;5;".to_vec()), Just(b"48;2;".to_vec()), Just(b"\x1b]".to_vec()), Just(b"\x07".to_vec()),
            Just(b"<&>".to_vec()), Just(b"\r".to_vec()), Just(b"text".to_vec()), Just(b"999999999999".to_vec()),
        ], 0..40)) {
            let line: Vec<u8> = parts.concat();
            let mut out = String::new();
            AnsiRenderer::new().line(&line, &mut out);
            without_spans(&out);
        }

        /// Advancing over a line leaves the style rendering it would, and
        /// the style survives its token.
        #[test]
        fn advance_and_state_agree_with_rendering(lines in prop::collection::vec(prop::collection::vec(prop_oneof![
            Just(b"\x1b[".to_vec()), Just(b"31".to_vec()), Just(b";".to_vec()), Just(b"m".to_vec()),
            Just(b"1;4;2;3".to_vec()), Just(b"38;5;".to_vec()), Just(b"48;2;".to_vec()), Just(b"7".to_vec()),
            Just(b"\x1b]".to_vec()), Just(b"\x07".to_vec()), Just(b"\x1b(".to_vec()), Just(b"0".to_vec()),
            Just(b"\r".to_vec()), Just(b"x".to_vec()), any::<u8>().prop_map(|b| vec![b]),
        ], 0..30), 1..6)) {
            let mut rendering = AnsiRenderer::new();
            let mut advancing = AnsiRenderer::new();
            for line in &lines {
                let line = line.concat();
                rendering.line(&line, &mut String::new());
                advancing.advance(&line);
                prop_assert_eq!(rendering.style, advancing.style);
                let back = AnsiRenderer::from_state(&advancing.state()).unwrap();
                prop_assert_eq!(back.style, advancing.style);
            }
        }

        /// Printable text without escapes comes back as it was.
        #[test]
        fn plain_text_is_kept(text in "[ -~]{0,200}") {
            let mut out = String::new();
            AnsiRenderer::new().line(text.as_bytes(), &mut out);
            prop_assert_eq!(unescape(&without_spans(&out)), text);
        }
    }
}
