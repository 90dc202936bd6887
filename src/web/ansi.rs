//! Log text to HTML: every byte escaped, ANSI SGR colours (16 colours,
//! bright variants, bold, dim, italic, underline) turned into `<span>`s with
//! classes, every other escape sequence dropped. Invalid UTF-8 is replaced,
//! never trusted. The renderer keeps its state across calls so a colour that
//! spans two chunks of a live tail stays on.

/// Appends `s` to `out` with `& < > " '` escaped, and every control
/// character but newline, carriage return and tab shown as a visible
/// `\u{..}` escape (as the CLI shows them): nothing from a remote reaches a
/// page raw.
pub fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\r' | '\t' => out.push(c),
            c if sparkwing_sync::doc::is_deceptive(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
}

/// `s` with HTML's special characters escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Style {
    fg: Option<u8>,
    bg: Option<u8>,
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
}

impl Style {
    fn is_plain(&self) -> bool {
        *self == Style::default()
    }

    fn classes(&self) -> String {
        let mut c = Vec::new();
        if let Some(f) = self.fg {
            c.push(format!("f{f}"));
        }
        if let Some(b) = self.bg {
            c.push(format!("b{b}"));
        }
        for (on, name) in [
            (self.bold, "bo"),
            (self.dim, "di"),
            (self.italic, "it"),
            (self.underline, "un"),
        ] {
            if on {
                c.push(name.to_string());
            }
        }
        c.join(" ")
    }

    fn apply(&mut self, params: &[u16]) {
        if params.is_empty() {
            *self = Style::default();
            return;
        }
        let mut i = 0;
        while i < params.len() {
            match params[i] {
                0 => *self = Style::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => {
                    self.bold = false;
                    self.dim = false;
                }
                23 => self.italic = false,
                24 => self.underline = false,
                p @ 30..=37 => self.fg = Some((p - 30) as u8),
                39 => self.fg = None,
                p @ 40..=47 => self.bg = Some((p - 40) as u8),
                49 => self.bg = None,
                p @ 90..=97 => self.fg = Some((p - 90 + 8) as u8),
                p @ 100..=107 => self.bg = Some((p - 100 + 8) as u8),
                // 256-colour and truecolour forms: skip their arguments.
                38 | 48 => match params.get(i + 1) {
                    Some(5) => i += 2,
                    Some(2) => i += 4,
                    _ => {}
                },
                _ => {}
            }
            i += 1;
        }
    }
}

/// A streaming ANSI-to-HTML renderer.
#[derive(Debug, Default)]
pub struct Renderer {
    style: Style,
    /// An escape sequence cut by the end of the previous chunk.
    pending: Vec<u8>,
}

impl Renderer {
    pub fn new() -> Renderer {
        Renderer::default()
    }

    /// Renders a chunk of log bytes to HTML. Spans are closed at the end of
    /// each chunk and reopened at the start of the next, so every returned
    /// string is balanced on its own.
    pub fn render(&mut self, bytes: &[u8]) -> String {
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(bytes);
        // Keep a trailing incomplete UTF-8 sequence or escape for next time.
        let mut end = input.len();
        if let Some(esc) = input.iter().rposition(|&b| b == 0x1b) {
            if !escape_complete(&input[esc..]) && input.len() - esc < 64 {
                end = esc;
            }
        }
        let cut = utf8_cut(&input[..end]);
        self.pending = input[cut..].to_vec();
        let text = String::from_utf8_lossy(&input[..cut]);

        let mut out = String::with_capacity(text.len() + 32);
        let mut open = false;
        let open_span = |out: &mut String, style: &Style, open: &mut bool| {
            if !style.is_plain() {
                out.push_str("<span class=\"");
                out.push_str(&style.classes());
                out.push_str("\">");
                *open = true;
            }
        };
        open_span(&mut out, &self.style, &mut open);
        let mut chars = text.char_indices().peekable();
        let mut plain_start = 0;
        let flush = |out: &mut String, from: usize, to: usize| escape_into(out, &text[from..to]);
        while let Some((i, c)) = chars.next() {
            if c != '\u{1b}' {
                continue;
            }
            flush(&mut out, plain_start, i);
            // Parse the sequence: CSI (ESC [ params final), OSC (ESC ] ... BEL
            // or ESC \), or a two-byte escape.
            let rest = &text[i + 1..];
            let consumed = match rest.as_bytes().first() {
                Some(b'[') => {
                    let body = &rest[1..];
                    match body.bytes().position(|b| (0x40..=0x7e).contains(&b)) {
                        Some(f) => {
                            if body.as_bytes()[f] == b'm' {
                                let params: Vec<u16> = body[..f]
                                    .split([';', ':'])
                                    .filter(|p| !p.is_empty())
                                    .map(|p| p.parse::<u16>().unwrap_or(u16::MAX))
                                    .collect();
                                let params = if body[..f].is_empty() { vec![] } else { params };
                                let before = self.style.clone();
                                self.style.apply(&params);
                                if self.style != before {
                                    if open {
                                        out.push_str("</span>");
                                        open = false;
                                    }
                                    open_span(&mut out, &self.style, &mut open);
                                }
                            }
                            1 + f + 1
                        }
                        None => rest.len(),
                    }
                }
                Some(b']') => {
                    let b = rest.as_bytes();
                    let mut j = 1;
                    while j < b.len()
                        && b[j] != 0x07
                        && !(b[j] == 0x1b && b.get(j + 1) == Some(&b'\\'))
                    {
                        j += 1;
                    }
                    if j < b.len() && b[j] == 0x1b {
                        j + 2
                    } else {
                        (j + 1).min(b.len())
                    }
                }
                // ESC, intermediates (0x20-0x2f), one final byte: `ESC ( B`.
                Some(_) => {
                    let b = rest.as_bytes();
                    let mut j = 0;
                    while j < b.len() && (0x20..=0x2f).contains(&b[j]) {
                        j += 1;
                    }
                    if j < b.len() {
                        j + rest[j..].chars().next().map(char::len_utf8).unwrap_or(1)
                    } else {
                        j
                    }
                }
                None => 0,
            };
            plain_start = i + 1 + consumed;
            while chars.peek().is_some_and(|(j, _)| *j < plain_start) {
                chars.next();
            }
        }
        if plain_start < text.len() {
            flush(&mut out, plain_start, text.len());
        }
        if open {
            out.push_str("</span>");
        }
        out
    }
}

/// Whether `s` (starting with ESC) holds a whole escape sequence.
fn escape_complete(s: &[u8]) -> bool {
    match s.get(1) {
        None => false,
        Some(b'[') => s[2..].iter().any(|b| (0x40..=0x7e).contains(b)),
        Some(b']') => s[2..].contains(&0x07) || s[2..].windows(2).any(|w| w == b"\x1b\\"),
        Some(_) => s[1..].iter().any(|b| !(0x20..=0x2f).contains(b)),
    }
}

/// The length of the longest prefix of `b` that does not end inside a
/// UTF-8 sequence (invalid bytes count as whole, to be replaced).
fn utf8_cut(b: &[u8]) -> usize {
    let n = b.len();
    for back in 1..=3.min(n) {
        let byte = b[n - back];
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        let need = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { n - back } else { n };
    }
    n
}

/// One-shot rendering of a whole text.
pub fn to_html(bytes: &[u8]) -> String {
    let mut r = Renderer::new();
    let mut out = r.render(bytes);
    let rest = std::mem::take(&mut r.pending);
    if !rest.is_empty() {
        escape_into(&mut out, &String::from_utf8_lossy(&rest));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_a_log_line_is_text() {
        let html = to_html(b"<script>alert('x')</script> & \"q\"\n");
        assert_eq!(
            html,
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;\n"
        );
    }

    #[test]
    fn colours_become_classes_and_reset_closes_them() {
        let html = to_html(b"\x1b[1;31merror\x1b[0m: done \x1b[92mok\x1b[m");
        assert_eq!(
            html,
            "<span class=\"f1 bo\">error</span>: done <span class=\"f10\">ok</span>"
        );
    }

    #[test]
    fn other_sequences_are_dropped() {
        assert_eq!(to_html(b"a\x1b[2Kb\x1b]0;title\x07c\x1b(Bd"), "abcd");
        assert_eq!(to_html(b"x\x1b[38;5;200my\x1b[0m"), "xy");
    }

    #[test]
    fn state_and_split_sequences_carry_across_chunks() {
        let mut r = Renderer::new();
        let a = r.render(b"\x1b[3");
        let b = r.render(b"2mgreen\n");
        let c = r.render(b"still\xe2\x9c");
        let d = r.render(b"\x93\x1b[0m\n");
        assert_eq!(a, "");
        assert_eq!(b, "<span class=\"f2\">green\n</span>");
        assert_eq!(c, "<span class=\"f2\">still</span>");
        assert_eq!(d, "<span class=\"f2\">✓</span>\n");
    }

    #[test]
    fn invalid_utf8_and_garbage_never_panic() {
        let html = to_html(b"\xff\xfe\x1b[99999999;;;m\x1b[\x1b]\x1b");
        assert!(html.starts_with('\u{fffd}'));
    }
}
