//! Header names: canonical spellings, RFC compact forms, case-insensitive lookup.

/// A header name the sensor knows, or `Other` (kept by its raw spelling).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    MaxForwards,
    UserAgent,
    ContentLength,
    ContentType,
    ContentEncoding,
    Accept,
    AcceptEncoding,
    AcceptLanguage,
    AcceptContact,
    Allow,
    AllowEvents,
    Expires,
    Subject,
    Supported,
    Require,
    ProxyRequire,
    Authorization,
    ProxyAuthorization,
    WwwAuthenticate,
    ProxyAuthenticate,
    Route,
    RecordRoute,
    Event,
    ReferTo,
    ReferredBy,
    RejectContact,
    RequestDisposition,
    SessionExpires,
    Identity,
    IdentityInfo,
    Server,
    Date,
    Organization,
    Priority,
    Warning,
    PAssertedIdentity,
    PPreferredIdentity,
    SubscriptionState,
    /// A name the table does not know, including malformed ones (`User Agent`, `Max_forwards`).
    #[default]
    Other,
}

/// (name, canonical spelling, compact letter). The compact letters are those of RFC 3261 §7.3.3
/// and the later RFCs that registered one (3265, 3515, 3841, 3892, 4028, 4474).
const TABLE: &[(HeaderName, &str, Option<u8>)] = &[
    (HeaderName::Via, "Via", Some(b'v')),
    (HeaderName::From, "From", Some(b'f')),
    (HeaderName::To, "To", Some(b't')),
    (HeaderName::CallId, "Call-ID", Some(b'i')),
    (HeaderName::CSeq, "CSeq", None),
    (HeaderName::Contact, "Contact", Some(b'm')),
    (HeaderName::MaxForwards, "Max-Forwards", None),
    (HeaderName::UserAgent, "User-Agent", None),
    (HeaderName::ContentLength, "Content-Length", Some(b'l')),
    (HeaderName::ContentType, "Content-Type", Some(b'c')),
    (HeaderName::ContentEncoding, "Content-Encoding", Some(b'e')),
    (HeaderName::Accept, "Accept", None),
    (HeaderName::AcceptEncoding, "Accept-Encoding", None),
    (HeaderName::AcceptLanguage, "Accept-Language", None),
    (HeaderName::AcceptContact, "Accept-Contact", Some(b'a')),
    (HeaderName::Allow, "Allow", None),
    (HeaderName::AllowEvents, "Allow-Events", Some(b'u')),
    (HeaderName::Expires, "Expires", None),
    (HeaderName::Subject, "Subject", Some(b's')),
    (HeaderName::Supported, "Supported", Some(b'k')),
    (HeaderName::Require, "Require", None),
    (HeaderName::ProxyRequire, "Proxy-Require", None),
    (HeaderName::Authorization, "Authorization", None),
    (HeaderName::ProxyAuthorization, "Proxy-Authorization", None),
    (HeaderName::WwwAuthenticate, "WWW-Authenticate", None),
    (HeaderName::ProxyAuthenticate, "Proxy-Authenticate", None),
    (HeaderName::Route, "Route", None),
    (HeaderName::RecordRoute, "Record-Route", None),
    (HeaderName::Event, "Event", Some(b'o')),
    (HeaderName::ReferTo, "Refer-To", Some(b'r')),
    (HeaderName::ReferredBy, "Referred-By", Some(b'b')),
    (HeaderName::RejectContact, "Reject-Contact", Some(b'j')),
    (
        HeaderName::RequestDisposition,
        "Request-Disposition",
        Some(b'd'),
    ),
    (HeaderName::SessionExpires, "Session-Expires", Some(b'x')),
    (HeaderName::Identity, "Identity", Some(b'y')),
    (HeaderName::IdentityInfo, "Identity-Info", Some(b'n')),
    (HeaderName::Server, "Server", None),
    (HeaderName::Date, "Date", None),
    (HeaderName::Organization, "Organization", None),
    (HeaderName::Priority, "Priority", None),
    (HeaderName::Warning, "Warning", None),
    (HeaderName::PAssertedIdentity, "P-Asserted-Identity", None),
    (HeaderName::PPreferredIdentity, "P-Preferred-Identity", None),
    (HeaderName::SubscriptionState, "Subscription-State", None),
];

impl HeaderName {
    /// The canonical spelling; `"Other"` for unknown names (use the raw name instead).
    pub fn canonical(self) -> &'static str {
        // TABLE lists the names in declaration order (checked by a test).
        TABLE.get(self as usize).map_or("Other", |(_, s, _)| s)
    }

    /// The compact form's letter, if the header has one.
    pub fn compact_letter(self) -> Option<u8> {
        TABLE.get(self as usize).and_then(|(_, _, c)| *c)
    }

    /// Looks a raw name up, case-insensitively. Returns the name and whether the compact
    /// form was used. Names with surrounding whitespace must be trimmed by the caller.
    ///
    /// Every header of every message goes through here, so it is a switch rather than a walk
    /// over the table.
    pub fn lookup(raw: &[u8]) -> (HeaderName, bool) {
        use HeaderName::*;
        if raw.len() == 1 {
            let name = match raw[0].to_ascii_lowercase() {
                b'v' => Via,
                b'f' => From,
                b't' => To,
                b'i' => CallId,
                b'm' => Contact,
                b'l' => ContentLength,
                b'c' => ContentType,
                b'e' => ContentEncoding,
                b'a' => AcceptContact,
                b'u' => AllowEvents,
                b's' => Subject,
                b'k' => Supported,
                b'o' => Event,
                b'r' => ReferTo,
                b'b' => ReferredBy,
                b'j' => RejectContact,
                b'd' => RequestDisposition,
                b'x' => SessionExpires,
                b'y' => Identity,
                b'n' => IdentityInfo,
                _ => return (Other, false),
            };
            return (name, true);
        }
        // Length, first and last letter tell every name of the table apart: one candidate,
        // then one comparison.
        let (Some(first), Some(last)) = (raw.first(), raw.last()) else {
            return (Other, false);
        };
        let candidate = match (
            raw.len(),
            first.to_ascii_lowercase(),
            last.to_ascii_lowercase(),
        ) {
            (2, b't', b'o') => To,
            (3, b'v', b'a') => Via,
            (4, b'c', b'q') => CSeq,
            (4, b'd', b'e') => Date,
            (4, b'f', b'm') => From,
            (5, b'a', b'w') => Allow,
            (5, b'e', b't') => Event,
            (5, b'r', b'e') => Route,
            (6, b'a', b't') => Accept,
            (6, b's', b'r') => Server,
            (7, b'c', b'd') => CallId,
            (7, b'c', b't') => Contact,
            (7, b'e', b's') => Expires,
            (7, b'r', b'e') => Require,
            (7, b's', b't') => Subject,
            (7, b'w', b'g') => Warning,
            (8, b'i', b'y') => Identity,
            (8, b'p', b'y') => Priority,
            (8, b'r', b'o') => ReferTo,
            (9, b's', b'd') => Supported,
            (10, b'u', b't') => UserAgent,
            (11, b'r', b'y') => ReferredBy,
            (12, b'a', b's') => AllowEvents,
            (12, b'c', b'e') => ContentType,
            (12, b'm', b's') => MaxForwards,
            (12, b'o', b'n') => Organization,
            (12, b'r', b'e') => RecordRoute,
            (13, b'a', b'n') => Authorization,
            (13, b'i', b'o') => IdentityInfo,
            (13, b'p', b'e') => ProxyRequire,
            (14, b'a', b't') => AcceptContact,
            (14, b'c', b'h') => ContentLength,
            (14, b'r', b't') => RejectContact,
            (15, b'a', b'g') => AcceptEncoding,
            (15, b'a', b'e') => AcceptLanguage,
            (15, b's', b's') => SessionExpires,
            (16, b'c', b'g') => ContentEncoding,
            (16, b'w', b'e') => WwwAuthenticate,
            (18, b'p', b'e') => ProxyAuthenticate,
            (18, b's', b'e') => SubscriptionState,
            (19, b'p', b'y') => PAssertedIdentity,
            (19, b'p', b'n') => ProxyAuthorization,
            (19, b'r', b'n') => RequestDisposition,
            (20, b'p', b'y') => PPreferredIdentity,
            _ => return (Other, false),
        };
        let name = if same_name(raw, &SPELLINGS[candidate as usize]) {
            candidate
        } else {
            Other
        };
        (name, false)
    }

    /// Resolves a name as written in a rule file: a canonical or compact name, any case.
    pub fn from_rule_name(name: &str) -> HeaderName {
        Self::lookup(name.as_bytes()).0
    }
}

/// Each canonical name lower-cased, with a mask of its letters (0x20), so that a raw byte `r`
/// spells canonical byte `c` in either case exactly when `r | mask == c`.
struct Spelling {
    lower: [u8; 24],
    mask: [u8; 24],
}

static SPELLINGS: [Spelling; TABLE.len()] = {
    let mut out = [const {
        Spelling {
            lower: [0; 24],
            mask: [0; 24],
        }
    }; TABLE.len()];
    let mut n = 0;
    while n < TABLE.len() {
        let name = TABLE[n].1.as_bytes();
        let mut i = 0;
        while i < name.len() {
            out[n].lower[i] = name[i].to_ascii_lowercase();
            out[n].mask[i] = if name[i].is_ascii_alphabetic() {
                0x20
            } else {
                0
            };
            i += 1;
        }
        n += 1;
    }
    out
};

/// `raw` spells `name` in any case (`raw` has the candidate's length, known from the switch).
fn same_name(raw: &[u8], name: &Spelling) -> bool {
    let n = raw.len().min(24);
    // No early exit: the loop vectorises, and a candidate usually matches in full anyway.
    raw.len() <= 24
        && raw[..n]
            .iter()
            .zip(&name.lower[..n])
            .zip(&name.mask[..n])
            .fold(0u8, |diff, ((r, c), m)| diff | ((r | m) ^ c))
            == 0
}

/// RFC 3261 `token` characters, as a table: every byte of an unknown header name is checked.
static TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    table
};

/// RFC 3261 `token` characters: what a well-formed header name is made of.
pub fn is_token_byte(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_insensitive() {
        assert_eq!(HeaderName::lookup(b"v"), (HeaderName::Via, true));
        assert_eq!(HeaderName::lookup(b"I"), (HeaderName::CallId, true));
        assert_eq!(HeaderName::lookup(b"call-id"), (HeaderName::CallId, false));
        assert_eq!(
            HeaderName::lookup(b"CONTENT-LENGTH").0,
            HeaderName::ContentLength
        );
        for letter in b"vftimlckseoruxyabdjn" {
            assert_ne!(
                HeaderName::lookup(&[*letter]).0,
                HeaderName::Other,
                "{}",
                *letter as char
            );
        }
        assert_eq!(HeaderName::lookup(b"q"), (HeaderName::Other, false));
    }

    #[test]
    fn malformed_names_are_other() {
        assert_eq!(HeaderName::lookup(b"User Agent").0, HeaderName::Other);
        assert_eq!(HeaderName::lookup(b"Max_forwards").0, HeaderName::Other);
        assert_eq!(HeaderName::lookup(b"").0, HeaderName::Other);
    }

    #[test]
    fn canonical_round_trip() {
        for (i, (name, spelling, letter)) in TABLE.iter().enumerate() {
            assert_eq!(
                *name as usize, i,
                "TABLE out of declaration order at {spelling}"
            );
            assert_eq!(name.canonical(), *spelling);
            assert_eq!(HeaderName::from_rule_name(spelling), *name);
            assert_eq!(name.compact_letter(), *letter);
        }
        assert_eq!(HeaderName::Other.canonical(), "Other");
    }

    #[test]
    fn lookup_agrees_with_the_table() {
        // The lookup's switch must say what a walk over the table says, for every spelling.
        let walk = |raw: &[u8]| -> (HeaderName, bool) {
            if raw.len() == 1 {
                let c = raw[0].to_ascii_lowercase();
                return TABLE
                    .iter()
                    .find(|(_, _, l)| *l == Some(c))
                    .map_or((HeaderName::Other, false), |(n, _, _)| (*n, true));
            }
            let found = TABLE
                .iter()
                .find(|(_, s, _)| s.as_bytes().eq_ignore_ascii_case(raw));
            (found.map_or(HeaderName::Other, |(n, _, _)| *n), false)
        };
        for (_, spelling, _) in TABLE {
            let mut variants = vec![
                spelling.to_string(),
                spelling.to_uppercase(),
                spelling.to_lowercase(),
                format!("{spelling}x"),
                spelling[1..].to_string(),
            ];
            // One byte changed at a time, to a byte of the same or the other case, or not a
            // letter at all: the comparison must see every position.
            for i in 0..spelling.len() {
                for b in [b'-', b'_', b' ', b'\r', 0xc1, b'q', b'Q'] {
                    let mut v = spelling.as_bytes().to_vec();
                    v[i] = b;
                    variants.push(String::from_utf8_lossy(&v).into_owned());
                }
            }
            for raw in variants {
                assert_eq!(
                    HeaderName::lookup(raw.as_bytes()),
                    walk(raw.as_bytes()),
                    "{raw}"
                );
            }
        }
        for b in 0..=255u8 {
            assert_eq!(HeaderName::lookup(&[b]), walk(&[b]), "{b}");
            assert_eq!(
                is_token_byte(b),
                b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
            );
        }
    }
}
