//! Text from the network, made safe to write to a terminal.
//!
//! Everything the CLI prints about the fleet — pod names, summaries, bonk ids, status payloads,
//! desk names — was published by someone else, and a terminal obeys control characters whoever
//! wrote them: an ESC starts a sequence that can move the cursor, clear the screen, set the
//! window title or write the clipboard (OSC 52); a C1 character (U+0080–U+009F) does the same in
//! one character on terminals that honour 8-bit controls; a bidi override reorders what the eye
//! reads (`api\u{202e}gol.exe` shows as `apiexe.log`). So the CLI never writes one: each is
//! replaced by a visible escape, the way `ls` and `git` quote file names, and the operator sees
//! that it was there.
//!
//! The rule is applied at the boundary, not field by field: every line that `tail`, `fleet`,
//! `bonk` and `demo`'s live view print goes through [`print_line`], which escapes the whole line,
//! so a field added to a line later cannot slip past. Where a field's width matters (the fleet
//! table's cells) it is escaped with [`text`] before it is measured; escaping is idempotent, so the
//! boundary leaves it as it is.
//!
//! Which characters: Unicode's controls (`char::is_control`: C0, DEL and C1), including `\n` and
//! `\t` because one field is shown on one line; Unicode's `Bidi_Control` characters; and the line
//! and paragraph separators U+2028 and U+2029. Each is written as `char::escape_default` writes it
//! (`\n`, `\t`, `\u{1b}`, `\u{9b}`, `\u{202e}`). Everything else — quotes, backslashes, `ü`, emoji —
//! is kept as it is. `str::escape_debug` is not used whole because it also escapes quotes and
//! backslashes, which would mangle ordinary summaries. The price is that a field holding the text
//! `\u{1b}` looks like one holding an ESC: ambiguous to the eye, harmless to the terminal, and
//! `--json` shows the exact value.
//!
//! No maintained crate does this: `strip-ansi-escapes` removes only well-formed ANSI sequences,
//! silently (a lone C1 or a bidi override passes through), and the escaping itself is std's.
//!
//! JSON output is terminal output too. serde_json escapes C0 controls, `"` and `\` inside strings
//! but writes DEL, C1 and bidi characters raw, so [`json`] writes those as `\uXXXX` escapes: the
//! output still decodes to exactly what was published.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Writes one line to standard output, with every unsafe character in it escaped.
pub(crate) fn print_line(line: &str) {
    println!("{}", text(line));
}

/// `untrusted` with every character a terminal could act on, or that could disguise the text
/// around it, replaced by its visible escape; borrowed when there is nothing to escape.
pub(crate) fn text(untrusted: &str) -> Cow<'_, str> {
    bonker_client::text::escape_unsafe(untrusted)
}

/// Serialised JSON with the unsafe characters serde_json leaves raw written as `\uXXXX`, so it
/// decodes to the same value.
///
/// Outside its strings serde_json writes only ASCII punctuation, digits, letters and whitespace,
/// so every unsafe character other than a C0 control is inside a string, where a `\uXXXX` escape
/// means the same character. C0 controls inside strings are already escaped by serde_json; the
/// ones left are the pretty printer's newlines, and they stay.
pub(crate) fn json(serialized: &str) -> Cow<'_, str> {
    let needs_escape =
        |character: char| character >= ' ' && bonker_client::text::is_unsafe(character);
    if !serialized.chars().any(needs_escape) {
        return Cow::Borrowed(serialized);
    }
    let mut escaped = String::with_capacity(serialized.len() + 16);
    for character in serialized.chars() {
        if needs_escape(character) {
            // Every unsafe character is in the Basic Multilingual Plane: four hex digits suffice.
            let _ = write!(escaped, "\\u{:04x}", u32::from(character));
        } else {
            escaped.push(character);
        }
    }
    Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use bonker_client::text::is_unsafe;

    use super::*;

    #[test]
    fn escape_sequences_become_visible() {
        assert_eq!(text("a\x1bb"), r"a\u{1b}b");
        // OSC 52: write "hacked" to the clipboard.
        assert_eq!(text("\x1b]52;c;aGFja2Vk\x07"), r"\u{1b}]52;c;aGFja2Vk\u{7}");
        // CSI: clear the screen, move the cursor home, set the title.
        assert_eq!(
            text("\x1b[2J\x1b[1;1H\x1b]0;pwned\x07"),
            r"\u{1b}[2J\u{1b}[1;1H\u{1b}]0;pwned\u{7}"
        );
        // The one-character C1 CSI, DEL and NUL.
        assert_eq!(text("\u{9b}31mred\x7f\0"), r"\u{9b}31mred\u{7f}\u{0}");
    }

    #[test]
    fn a_field_stays_on_one_line() {
        assert_eq!(
            text("api-0\nDESK x online\r\tz"),
            r"api-0\nDESK x online\r\tz"
        );
        assert_eq!(text("a\u{2028}b\u{2029}c"), r"a\u{2028}b\u{2029}c");
    }

    #[test]
    fn bidi_controls_cannot_disguise_text() {
        assert_eq!(text("api\u{202e}gol.exe"), r"api\u{202e}gol.exe");
        for bidi in [
            '\u{061c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}',
            '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ] {
            let shown = text(&bidi.to_string()).into_owned();
            assert_eq!(shown, format!("\\u{{{:x}}}", u32::from(bidi)));
        }
    }

    #[test]
    fn plain_text_is_kept_as_it_is() {
        for plain in [
            "api-0",
            "Müller’s pod ü",
            "🐧 BONK! 👍🏽 👩‍💻 🇩🇪",
            "日本語 ملف",
            r#"quotes " ' and a \ backslash"#,
            "41.5°C → ok",
            "",
        ] {
            assert!(matches!(text(plain), Cow::Borrowed(_)), "{plain}");
            assert_eq!(text(plain), plain);
            assert!(matches!(json(plain), Cow::Borrowed(_)), "{plain}");
        }
    }

    #[test]
    fn escaping_is_idempotent() {
        let hostile = "\x1b]52;c;x\x07\u{9b}\u{202e}\n\x7f";
        let once = text(hostile).into_owned();
        assert_eq!(text(&once), once);
        assert!(once.chars().all(|c| !is_unsafe(c)), "{once}");
    }

    #[test]
    fn json_stays_valid_and_lossless() {
        let hostile = "\x1b]52;c;x\x07 \u{9b}31m \u{202e}gol \x7f \n\t ü 🐧";
        let value = serde_json::json!({ "pod": hostile, "list": [hostile] });
        for serialized in [
            value.to_string(),
            serde_json::to_string_pretty(&value).expect("serialises"),
        ] {
            // serde_json on its own leaves C1, DEL and bidi characters raw.
            assert!(serialized.contains('\u{9b}') && serialized.contains('\u{202e}'));
            let safe = json(&serialized);
            assert!(safe.chars().all(|c| c == '\n' || !is_unsafe(c)), "{safe}");
            assert!(
                safe.contains(r"\u009b") && safe.contains(r"\u202e") && safe.contains(r"\u007f")
            );
            let back: serde_json::Value = serde_json::from_str(&safe).expect("still JSON");
            assert_eq!(back, value);
            // What reaches the terminal line by line is unchanged by the boundary's escaping.
            for line in safe.lines() {
                assert_eq!(text(line), line);
            }
        }
    }
}
