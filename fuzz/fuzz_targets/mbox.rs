//! The mbox splitter: no input may panic, every message it cuts out is no
//! larger than the limit plus one byte, and the pieces account for the input.
#![no_main]

use chatwoot_ingress::import::mbox::{split, Flavour};
use chatwoot_ingress::message::Input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    for flavour in [Flavour::Mboxrd, Flavour::Mboxo] {
        let limit = 64;
        let mut taken = 0;
        split(input, flavour, limit, Some("inbox@example.com"), |piece| {
            let kept = match &piece.input {
                Input::Complete(raw) => raw.input().len(),
                Input::TooLarge(raw) => raw.input().len(),
            };
            assert!(kept as u64 <= limit + 1);
            assert_eq!(piece.at.offset, taken, "the pieces follow each other");
            taken += piece.at.len;
            true
        })
        .unwrap();
        assert_eq!(taken, input.len() as u64, "every byte belongs to one message");
    }
});
