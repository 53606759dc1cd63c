//! The agent's bonk parser, `Bonk::parse_lenient`, on arbitrary bytes.
//!
//! Anyone who can publish on a bonk topic chooses these bytes (people type bonks by hand), so
//! besides never panicking the parser must keep its promises whatever it is given:
//! - every text field is cut to `MAX_FIELD_LEN` bytes and the id to `MAX_ID_LEN`, so a desk's memory
//!   and its acks stay small;
//! - the bonk it returns survives its own wire format unchanged: what the agent acks and logs is
//!   what it parsed.
#![no_main]

use bonker_protocol::Bonk;
use bonker_protocol::bonk::{MAX_FIELD_LEN, MAX_ID_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = Bonk::parse_lenient(data);
    let bonk = &parsed.bonk;
    assert!(!bonk.id.as_str().is_empty());
    assert!(bonk.id.as_str().len() <= MAX_ID_LEN);
    for field in [
        &bonk.namespace,
        &bonk.pod,
        &bonk.container,
        &bonk.process,
        &bonk.node,
        &bonk.alertname,
        &bonk.reason,
        &bonk.summary,
        &bonk.cluster,
    ]
    .into_iter()
    .flatten()
    {
        assert!(
            field.len() <= MAX_FIELD_LEN,
            "a field of {} bytes",
            field.len()
        );
    }
    assert!(bonk.count >= 1);

    let wire = bonk.to_json();
    let again = Bonk::parse_lenient(&wire);
    assert!(
        again.warnings.is_empty(),
        "re-parsing our own payload warned: {:?}",
        again.warnings
    );
    assert_eq!(&again.bonk, bonk, "the bonk changed on the wire");
});
