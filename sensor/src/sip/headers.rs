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
    pub fn lookup(raw: &[u8]) -> (HeaderName, bool) {
        if raw.len() == 1 {
            let c = raw[0].to_ascii_lowercase();
            return TABLE
                .iter()
                .find(|(_, _, l)| *l == Some(c))
                .map_or((HeaderName::Other, false), |(n, _, _)| (*n, true));
        }
        let found = TABLE
            .iter()
            .find(|(_, s, _)| s.len() == raw.len() && s.as_bytes().eq_ignore_ascii_case(raw));
        (found.map_or(HeaderName::Other, |(n, _, _)| *n), false)
    }

    /// Resolves a name as written in a rule file: a canonical or compact name, any case.
    pub fn from_rule_name(name: &str) -> HeaderName {
        Self::lookup(name.as_bytes()).0
    }
}

/// RFC 3261 `token` characters: what a well-formed header name is made of.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
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
}
