//! Text that came from the network, made safe to show: alert labels, pod names, desk health
//! fields and ack ids were written by someone else, and a terminal obeys control characters
//! whoever wrote them (OSC 52 writes the clipboard, CSI moves the cursor, a raw `\n` starts a
//! forged log line), and bidi controls make text read as something it is not. Every program's
//! log and the CLI's output go through [`escape_unsafe`].

use std::borrow::Cow;

/// Whether a terminal could act on `character`, or it could disguise the text around it: every
/// control character (C0, DEL, C1) and the Bidi_Control characters, plus the line and paragraph
/// separators (line breaks to some renderers).
pub fn is_unsafe(character: char) -> bool {
    character.is_control()
        || matches!(
            character,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `untrusted` with each unsafe character written as its Rust escape (`\n`, `\u{1b}`,
/// `\u{202e}`); borrowed when there is nothing to escape. Escaping twice changes nothing more.
pub fn escape_unsafe(untrusted: &str) -> Cow<'_, str> {
    if !untrusted.chars().any(is_unsafe) {
        return Cow::Borrowed(untrusted);
    }
    let mut escaped = String::with_capacity(untrusted.len() + 16);
    for character in untrusted.chars() {
        if is_unsafe(character) {
            escaped.extend(character.escape_default());
        } else {
            escaped.push(character);
        }
    }
    Cow::Owned(escaped)
}
