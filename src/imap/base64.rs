//! Base64 for SASL (RFC 4648, padded) and for modified UTF-7 folder names
//! (RFC 3501 5.1.3: `,` for `/`, no padding).

pub(super) const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub(super) const MAILBOX: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

pub(super) fn encode(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        let digits = chunk.len() + 1;
        for i in 0..4 {
            if i < digits {
                out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// The bytes `text` encodes, or None if it is not base64 in `alphabet`
/// (padding is accepted only where it belongs, and only when `pad`).
pub(super) fn decode(text: &[u8], alphabet: &[u8; 64], pad: bool) -> Option<Vec<u8>> {
    let text = if pad {
        if !text.len().is_multiple_of(4) {
            return None;
        }
        let padding = text.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 {
            return None;
        }
        &text[..text.len() - padding]
    } else {
        text
    };
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let value = alphabet.iter().position(|&a| a == c)? as u32;
            n |= value << (18 - 6 * i);
        }
        let bytes = chunk.len() - 1;
        // Bits past the last whole byte must be zero (one encoding per input).
        if n & (0xff_ffff >> (8 * bytes)) != 0 {
            return None;
        }
        out.extend((0..bytes).map(|i| (n >> (16 - 8 * i)) as u8));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes(), STANDARD, true), encoded);
            assert_eq!(decode(encoded.as_bytes(), STANDARD, true).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(encode(b"fo", MAILBOX, false), "Zm8");
        assert_eq!(decode(b"Zm8", MAILBOX, false).as_deref(), Some(&b"fo"[..]));
    }

    #[test]
    fn malformed_base64_is_refused() {
        for bad in ["Zg=", "Z===", "Zh==", "Zm9v!A==", "=Zg=", "Zm9vY"] {
            assert_eq!(decode(bad.as_bytes(), STANDARD, true), None, "{bad}");
        }
        assert_eq!(decode(b"Zm8=", MAILBOX, false), None);
    }
}
