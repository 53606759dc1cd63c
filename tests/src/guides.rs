//! The configuration the user guides recommend, read from the guides themselves, so that the tests
//! prove what the documentation says (and fail when the two drift apart).

use std::path::PathBuf;

/// The first fenced code block (```` ```lang ````) after the heading that contains `heading`, in
/// `docs/<guide>`.
pub fn code_block_after(guide: &str, heading: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("docs")
        .join(guide);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let start = text
        .lines()
        .position(|line| line.starts_with('#') && line.contains(heading))
        .unwrap_or_else(|| panic!("docs/{guide} has no heading with {heading:?}"));
    let mut block = Vec::new();
    let mut inside = false;
    for line in text.lines().skip(start + 1) {
        if line.starts_with("```") {
            if inside {
                return block.join("\n") + "\n";
            }
            inside = true;
            continue;
        }
        if inside {
            block.push(line);
        }
    }
    panic!("docs/{guide}: no code block after {heading:?}");
}

/// The line of a configuration block that sets `key` (`key value`), e.g. `max_packet_size 262144`.
pub fn setting(block: &str, key: &str) -> String {
    block
        .lines()
        .find(|line| line.split_whitespace().next() == Some(key))
        .unwrap_or_else(|| panic!("the documented configuration does not set {key}:\n{block}"))
        .to_owned()
}

/// `block` with the value of the line that sets `key` replaced by `value` — for the few settings
/// that name a machine, a file or a secret (an address, a CA file, a password), which a test must
/// point at its own. Panics when the block does not set `key`, so a test cannot drift from a
/// guide that stopped setting it.
pub fn with_setting(block: &str, key: &str, value: &str) -> String {
    let line = setting(block, key);
    block
        .lines()
        .map(|l| {
            if l == line {
                format!("{key} {value}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
