//! How long the ingress's certificate has left. The handshake already
//! proved it valid for the host; only its notAfter is read here.

use std::time::{SystemTime, UNIX_EPOCH};

use mail_parser::DateTime;

use super::report::{Report, Steps};

/// Less than this many days left is worth a warning.
const RENEW_DAYS: i64 = 14;

/// The handshake succeeded, so the certificate is valid for the host: say for how long.
pub fn expiry(certificate: Option<&[u8]>, host: &str, r: &mut Report) {
    let Some(expiry) = certificate.and_then(not_after) else {
        return r.ok("tls", format!("certificate valid for {host} (its expiry date could not be read)"));
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let days = (expiry.to_timestamp() - now).div_euclid(86_400);
    r.certificate_days_left = Some(days);
    let detail = format!("certificate valid for {host}, expires in {days} days ({})", expiry.to_rfc3339());
    if days < RENEW_DAYS {
        r.warn("tls", detail, "renew it: is the automatic renewal running?");
    } else {
        r.ok("tls", detail);
    }
}

/// The notAfter of a DER X.509 certificate: the few fields before it are
/// skipped, which needs no X.509 parser crate.
fn not_after(der: &[u8]) -> Option<DateTime> {
    let (_, certificate, _) = tlv(der)?;
    let (_, mut tbs, _) = tlv(certificate)?;
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2; // [0] version
    }
    for _ in 0..3 {
        tbs = tlv(tbs)?.2; // serialNumber, signature, issuer
    }
    let (_, validity, _) = tlv(tbs)?;
    let (tag, time, _) = tlv(tlv(validity)?.2)?;
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let (year, rest): (u16, &str) = match tag {
        0x17 => {
            let yy: u16 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?) // UTCTime
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?), // GeneralizedTime
        _ => return None,
    };
    let n = |at: usize| -> Option<u8> { rest.get(at..at + 2)?.parse().ok() };
    let date = DateTime {
        year,
        month: n(0)?,
        day: n(2)?,
        hour: n(4)?,
        minute: n(6)?,
        second: n(8)?,
        tz_before_gmt: false,
        tz_hour: 0,
        tz_minute: 0,
    };
    // Not DateTime::is_valid: it refuses years after 3000, and RFC 5280
    // writes "no expiry" as 9999-12-31.
    let valid = (1..=12).contains(&date.month)
        && (1..=31).contains(&date.day)
        && date.hour < 24
        && date.minute < 60
        && date.second < 60;
    valid.then_some(date)
}

/// One DER element: (tag, contents, what follows).
fn tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        let (bytes, after) = rest.split_at_checked(n).filter(|_| (1..=4).contains(&n))?;
        rest = after;
        bytes.iter().fold(0, |len, &b| len << 8 | usize::from(b))
    };
    let (contents, after) = rest.split_at_checked(len)?;
    Some((tag, contents, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_not_after_in_both_time_formats() {
        // Made with `openssl req -x509 -days 30` and `-days 36500`.
        let utc_time = include_bytes!("../../tests/certs/not-after-2026.der");
        let generalized_time = include_bytes!("../../tests/certs/not-after-2126.der");
        let at = |der: &[u8]| not_after(der).map(|date| date.to_timestamp());
        assert_eq!(at(utc_time), Some(1_798_054_456)); // 2026-12-23 19:34:16
        assert_eq!(at(generalized_time), Some(4_949_062_456)); // 2126-10-30 19:34:16
        assert_eq!(not_after(utc_time).unwrap().to_rfc3339(), "2026-12-23T19:34:16Z");
        assert_eq!(not_after(generalized_time).unwrap().to_rfc3339(), "2126-10-30T19:34:16Z");
        assert_eq!(not_after(&utc_time[..100]), None);
        assert_eq!(not_after(b""), None);
    }
}
