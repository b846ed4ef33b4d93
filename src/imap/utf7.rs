//! Modified UTF-7 (RFC 3501 5.1.3), the wire form of folder names: printable
//! ASCII stands for itself (`&` as `&-`), anything else is UTF-16 in
//! base64 (`,` for `/`, no padding) between `&` and `-`.

use base64::alphabet::IMAP_MUTF7;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

/// RFC 3501's base64: `,` for `/`, no padding, none accepted.
const MUTF7: GeneralPurpose = GeneralPurpose::new(
    &IMAP_MUTF7,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// The wire form of a folder name.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut wide: Vec<u16> = Vec::new();
    let flush = |wide: &mut Vec<u16>, out: &mut String| {
        if !wide.is_empty() {
            let bytes: Vec<u8> = wide.iter().flat_map(|unit| unit.to_be_bytes()).collect();
            out.push('&');
            out.push_str(&MUTF7.encode(&bytes));
            out.push('-');
            wide.clear();
        }
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut wide, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            wide.extend(c.encode_utf16(&mut [0; 2]).iter());
        }
    }
    flush(&mut wide, &mut out);
    out
}

/// The name a server's wire form stands for, or None if it is not modified
/// UTF-7 (a server that sends raw UTF-8, or garbage).
pub fn decode(wire: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(wire.len());
    let mut rest = wire;
    while let Some((&c, tail)) = rest.split_first() {
        match c {
            b'&' => {
                let end = tail.iter().position(|&b| b == b'-')?;
                let (run, after) = (&tail[..end], &tail[end + 1..]);
                if run.is_empty() {
                    out.push('&');
                } else {
                    let bytes = MUTF7.decode(run).ok()?;
                    if !bytes.len().is_multiple_of(2) {
                        return None;
                    }
                    let units = bytes.chunks(2).map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
                    for decoded in char::decode_utf16(units) {
                        let decoded = decoded.ok()?;
                        // Printable ASCII must not hide in a base64 run.
                        if (' '..='~').contains(&decoded) {
                            return None;
                        }
                        out.push(decoded);
                    }
                }
                rest = after;
            }
            0x20..=0x7e => {
                out.push(char::from(c));
                rest = tail;
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc_3501_and_other_examples() {
        for (name, wire) in [
            ("INBOX", "INBOX"),
            ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
            ("Éléments envoyés", "&AMk-l&AOk-ments envoy&AOk-s"),
            ("Tom & Jerry", "Tom &- Jerry"),
            ("&&", "&-&-"),
            ("😀", "&2D3eAA-"),
            ("Entwürfe", "Entw&APw-rfe"),
            ("tab\there", "tab&AAk-here"),
        ] {
            assert_eq!(encode(name), wire, "{name}");
            assert_eq!(decode(wire.as_bytes()).as_deref(), Some(name), "{wire}");
        }
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in [
            &b"&U,BTFw"[..],       // no closing -
            b"&U,B-",              // bits left over
            b"&AGE-",              // "a" in base64
            b"&2D0-",              // a lone surrogate
            "Entwürfe".as_bytes(), // raw UTF-8
            b"a\x00b",
            b"&U/BTFw-", // '/' is not in the alphabet
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_name_round_trips(name in any::<String>()) {
            let wire = encode(&name);
            prop_assert!(wire.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            prop_assert_eq!(decode(wire.as_bytes()), Some(name));
        }

        #[test]
        fn decoding_never_panics(wire in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&wire);
        }
    }
}
