//! The validator and the preparation of a message: no input may panic, and
//! an accepted message is the input minus one From_ line plus at most one
//! X-Original-To line.
#![no_main]

use chatwoot_ingress::message::{from_line_len, validate, Message, Raw};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let _ = validate(input);
    let recipient = Some("inbox@example.com");
    if let Ok(message) = Message::prepare(Raw::from_slice(input, recipient), recipient) {
        let rest = &input[from_line_len(input)..];
        assert!(message.bytes.ends_with(rest));
        let added = message.bytes.len() - rest.len();
        assert_eq!(added > 0, message.added_original_to);
        assert!(message.bytes.starts_with(b"X-Original-To: inbox@example.com") || added == 0);
    }
});
