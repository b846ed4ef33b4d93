//! The validator, the preparation of a message and the dry run's header
//! reader: no input may panic; an accepted message is the input minus one
//! From_ line, with every X-Original-To renamed and one added (or left as is
//! when its only one names the recipient); preparing it again changes
//! nothing.
#![no_main]

use chatwoot_ingress::headers::RoutingView;
use chatwoot_ingress::message::{from_line_len, validate, Message, OriginalTo, Raw};
use libfuzzer_sys::fuzz_target;

const ADDED: &[u8] = b"X-Original-To: inbox@example.com";
/// How much longer a renamed field's name is.
const RENAMED: usize = "X-Previous-Original-To".len() - "X-Original-To".len();

fuzz_target!(|input: &[u8]| {
    let _ = validate(input);
    let _ = RoutingView::of(input);
    let recipient = Some("inbox@example.com");
    let Ok(message) = Message::prepare(Raw::from_slice(input, recipient), recipient) else {
        return;
    };
    let rest = &input[from_line_len(input)..];
    let bytes = &message.bytes[..];
    let previous = match message.original_to {
        OriginalTo::AlreadyThere => {
            assert_eq!(bytes, rest);
            None
        }
        OriginalTo::Added => Some(0),
        OriginalTo::Replaced { previous } => Some(previous),
        OriginalTo::NoRecipient => unreachable!("a recipient was given"),
    };
    if let Some(previous) = previous {
        let added = bytes.len() - rest.len() - previous * RENAMED;
        assert!(added == ADDED.len() + 1 || added == ADDED.len() + 2);
        assert!(bytes.windows(ADDED.len()).any(|w| w == ADDED));
    }
    let again = Message::prepare(Raw::from_slice(bytes, None), recipient).expect("our own output is valid");
    assert_eq!(again.bytes, message.bytes, "preparing is idempotent");
    let plain =
        Message::prepare(Raw::from_slice(input, None), None).expect("valid with a recipient, so without");
    assert_eq!(&plain.bytes[..], rest, "without a recipient only the From_ line goes");
});
