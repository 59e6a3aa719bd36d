//! `send-test`'s pieces: a phone number as people write it, made E.164 digits; and what the messages
//! endpoint's error codes (`graph-api.md` §9) mean for the person sending.

/// `+1 650-555-0100`, `(650) 555 0100` with a country code, `0044 7700 900123` → E.164 digits without
/// the plus, or why not.
pub fn normalise_number(input: &str) -> Result<String, &'static str> {
    let trimmed = input.trim();
    let mut digits = String::new();
    for (i, c) in trimmed.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => {}
            ' ' | '-' | '.' | '(' | ')' | '\u{a0}' => {}
            _ => {
                return Err(
                    "a phone number holds only digits, spaces, dashes, dots, brackets and a leading +",
                );
            }
        }
    }
    // `00` is the international prefix in much of the world: `0044…` is `+44…`.
    let digits = match digits.strip_prefix("00") {
        Some(rest) if !trimmed.starts_with('+') => rest.to_owned(),
        _ => digits,
    };
    if digits.starts_with('0') {
        return Err("the number must start with its country code (e.g. +1 or +44), not a trunk 0");
    }
    if !(8..=15).contains(&digits.len()) {
        return Err("an international number has 8 to 15 digits with its country code");
    }
    Ok(digits)
}

/// What a messages-endpoint error means, and what to do.
pub fn explain(code: i64) -> Option<(&'static str, &'static str)> {
    Some(match code {
        131030 => (
            "the test number may only message the numbers on its allowed list",
            "add the recipient in App Dashboard → WhatsApp → API Setup → \"To\" (up to 5 numbers), or send from a registered production number",
        ),
        132001 => (
            "the template does not exist in that language",
            "check the name and language in WhatsApp Manager → Message templates (hello_world exists in en_US on new accounts)",
        ),
        132000 | 132012 => (
            "the template's parameters do not match it",
            "send as many parameters, of the types, as the template has",
        ),
        131047 => (
            "more than 24 hours since the customer last wrote: only templates may be sent",
            "send an approved template",
        ),
        131026 => (
            "the message could not be delivered (not on WhatsApp, an old app, …)",
            "check the number is on WhatsApp and has accepted the latest terms",
        ),
        131031 => (
            "the business account is locked",
            "WhatsApp Manager → Account quality says why and how to ask for a review",
        ),
        368 => (
            "temporarily blocked for policy violations",
            "WhatsApp Manager → Account quality",
        ),
        131042 => (
            "a payment method problem",
            "add or fix the payment method in WhatsApp Manager → Settings → Payment",
        ),
        133010 => (
            "the business number is not registered",
            "register it: `POST /{phone-number-id}/register` with its PIN",
        ),
        131056 => (
            "too many messages to this one user (about one per 6 s)",
            "wait a little between messages to the same number",
        ),
        130429 => (
            "the number's throughput limit was hit",
            "send more slowly, or ask for higher throughput",
        ),
        131048 => (
            "the spam rate limit was hit",
            "send fewer, more expected messages; check the quality rating",
        ),
        80007 => (
            "the account's rate limit was hit",
            "wait, then send fewer calls an hour",
        ),
        131005 | 10 | 200 => (
            "the token lacks a permission for this",
            "generate it with whatsapp_business_messaging, granted on this account",
        ),
        131008 | 131009 | 100 => (
            "the request is malformed",
            "check the phone number id in `WHATSAPP_PHONE_NUMBER_ID` and the recipient",
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_people_write_them() {
        assert_eq!(normalise_number("+1 650-555-0100").unwrap(), "16505550100");
        assert_eq!(
            normalise_number("+1 (650) 555.0100").unwrap(),
            "16505550100"
        );
        assert_eq!(
            normalise_number("0044 7700 900123").unwrap(),
            "447700900123"
        );
        assert_eq!(normalise_number("447700900123").unwrap(), "447700900123");
        for bad in [
            "",
            "+",
            "07700 900123",
            "+1 650-555-010x",
            "123",
            "+1234567890123456",
            "+44 7700 ++ 900",
        ] {
            assert!(normalise_number(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_documented_code_is_explained() {
        for code in [
            131030, 132001, 132000, 132012, 131047, 131026, 131031, 368, 131042, 133010, 131056,
            130429, 131048, 80007, 131005, 10, 200, 131008, 131009, 100,
        ] {
            assert!(explain(code).is_some(), "{code}");
        }
        assert!(explain(1).is_none());
    }
}
