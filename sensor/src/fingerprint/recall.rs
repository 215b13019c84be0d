//! Recognising a template's packets before parsing them.
//!
//! The packets of one scanner template differ in the values of their digits: addresses, ports,
//! tags, Call-IDs, branches. Those digits lie in the parts the key abstracts (the request URI,
//! header values, the status line after the version, the body), where neither the message
//! parser nor the field parsers read a digit's value: two such packets of one length parse
//! alike, every line, header and field at the same offset ([`Layout`], [`FieldPlaces`]). So the
//! first packet's parse is kept with its cache entry, and a later packet is looked up by its
//! payload with every digit not right after a letter read as `0` (what the key builder masks),
//! compared whole; the digits that stand outside the abstracted parts (the version's, a header
//! name's) must also be the template's. A packet recalled so gets the template's parse, field
//! places and cache entry, without parsing its message or building its key.

use std::collections::HashMap;

use crate::sip::{Layout, SipMessage, message::message_flags};

use super::{
    cache::{BuildIdentity, Kept},
    facts::{Facts, FieldPlaces},
    key::{self, KeyBuilder, MAX_KEY_BYTES},
};

/// A template recalled for a payload: its field places, and where its cache entry is.
#[derive(Clone, Copy, Debug)]
pub struct Recalled {
    id: u64,
    places: Option<FieldPlaces>,
}

impl Recalled {
    pub fn places(self) -> Option<FieldPlaces> {
        self.places
    }
}

struct Template {
    /// The capture's cut flag, then the payload masked.
    masked: Box<[u8]>,
    /// Digits outside the abstracted parts, by offset: a packet of the template has them too.
    kept_digits: Box<[(u16, u8)]>,
    layout: Layout,
    /// Read from the Content-Length's value, so checked per packet.
    truncated: bool,
    places: Option<FieldPlaces>,
    /// What it keeps of the classification cache.
    kept: Kept,
}

/// The templates met, by the hash of their masked payload.
pub(super) struct Recall {
    templates: HashMap<u64, Template, BuildIdentity>,
    /// Templates kept; when full, all are forgotten (they come back at their next packet).
    limit: usize,
    /// Room for the longest payload masked, the cut flag first; the first `masked_len` bytes
    /// are the last one.
    masked: Box<[u8]>,
    masked_len: usize,
}

impl Recall {
    pub fn new(limit: usize) -> Self {
        Recall {
            templates: HashMap::with_hasher(BuildIdentity),
            limit: limit.max(1),
            masked: vec![0; MAX_KEY_BYTES + 1].into(),
            masked_len: 0,
        }
    }

    /// Masks the payload into `self.masked`; its hash, or `None` for a payload longer than a
    /// key may be (such packets go without the cache).
    fn mask(&mut self, payload: &[u8], cut: bool) -> Option<u64> {
        let masked = self.masked.get_mut(..payload.len() + 1)?;
        masked[0] = u8::from(cut);
        key::mask_digits_into(payload, &mut masked[1..]);
        self.masked_len = masked.len();
        Some(key::hash(masked))
    }

    /// The payload last masked.
    fn masked(&self) -> &[u8] {
        &self.masked[..self.masked_len]
    }

    /// The template of `payload`, when it is one met before.
    fn find(&mut self, payload: &[u8], cut: bool) -> Option<(u64, &Template)> {
        let id = self.mask(payload, cut)?;
        let t = self.templates.get(&id)?;
        // Equal masks are equal lengths: the layout's spans fit the payload.
        let found = *t.masked == *self.masked()
            && t.kept_digits
                .iter()
                .all(|&(i, d)| payload.get(usize::from(i)) == Some(&d))
            && t.layout.truncated(payload) == t.truncated;
        found.then_some((id, t))
    }

    /// Parses `msg` ([`SipMessage::unparsed`]), or, when its template is one met before, lays
    /// that template's parse over it; the template recalled, if any.
    pub fn parse(&mut self, msg: &mut SipMessage<'_>) -> Option<Recalled> {
        let found = self.find(msg.bytes(), msg.has(message_flags::CAPTURE_CUT));
        msg.parse_or_lay(found.map(|(_, t)| &t.layout));
        found.map(|(id, t)| Recalled {
            id,
            places: t.places,
        })
    }

    /// What a recalled template keeps of the classification cache.
    pub fn kept_mut(&mut self, recalled: &Recalled) -> Option<&mut Kept> {
        self.templates.get_mut(&recalled.id).map(|t| &mut t.kept)
    }

    /// Keeps `msg`'s template, with the cache entry its key has.
    pub fn learn(&mut self, builder: &mut KeyBuilder, facts: &Facts<'_>, kept: Kept) {
        let msg = facts.msg;
        let Some(id) = self.mask(msg.bytes(), msg.has(message_flags::CAPTURE_CUT)) else {
            return;
        };
        if self.templates.len() >= self.limit {
            self.templates.clear();
        }
        self.templates.insert(
            id,
            Template {
                masked: self.masked().into(),
                kept_digits: builder.kept_digits(msg).into(),
                layout: msg.layout(),
                truncated: msg.truncated(),
                places: FieldPlaces::of(facts),
                kept,
            },
        );
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.templates.len()
    }
}

/// Everything a message and its facts say, in a comparable form, offsets included: a recalled
/// message must point where a parsed one does. For the recall's tests and its fuzz target.
#[doc(hidden)]
pub fn described(facts: &Facts<'_>) -> String {
    let msg = facts.msg;
    let at = |s: &[u8]| (s.as_ptr() as usize).wrapping_sub(msg.bytes().as_ptr() as usize);
    let headers: Vec<_> = msg
        .headers()
        .map(|h| (h, at(h.line), at(h.value), at(h.raw_name), at(h.separator)))
        .collect();
    format!(
        "{msg:?} {headers:?} {:?} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
        msg.start_line(),
        msg.truncated(),
        msg.body().map(at),
        msg.status_code(),
        facts.ruri(),
        facts.via(),
        facts.from(),
        facts.to(),
        facts.contact(),
        facts.cseq(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recalled_message_is_the_parsed_one() {
        // Seeds varied as scanners vary them (digits redrawn: recalled) and as they do not
        // (anything changed, a byte cut off: another template, or none).
        let seeds: [&[u8]; 5] = [
            b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-123;rport\r\nFrom: \"sipvicious\"<sip:100@1.1.1.1>;tag=3435313131\r\nTo: \"sipvicious\"<sip:100@1.1.1.1>\r\nCall-ID: 4f3a91\r\nX-1: 22\r\nCSeq: 1 OPTIONS\r\nContact: <sip:100@10.0.0.1:5060>\r\nUser-Agent: IP4 MD5 a1b2\r\nContent-Length: 10\r\n\r\nv=0\r\n1=2\r\ns=x9\r\n",
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4\r\nContent-Length: 3\r\n\r\n123",
            b"\x16\x03\x01\x00\xa51234567890123456789012345678901234567890123456789012345678901abc12345",
            b"OPTIONS sip:1@2 SIP/2.0\nVia: SIP/2.0/UDP 9.9.9.9;branch=z9hG4bK1a2b3c\nContent-Length: 10\n\nabc",
            b"INVITE sip:1@[2001:db8::1]:5060 SIP/2.0\r\nf: 1 <sip:2@3>;tag=4\r\nt: <sip:5@6>\r\nv: SIP/2.0/TCP [2001:db8::2]:5;branch=z9hG4bK7\r\nm: sip:8@9\r\nCSeq: 10 INVITE\r\n\r\n",
        ];
        let mut random = crate::fingerprint::key::tests::below();
        let mut builder = KeyBuilder::default();
        let mut recall = Recall::new(1 << 16);
        let mut recalled_count = 0;
        // Keys of templates, for the property that one template has one key.
        let mut keys: HashMap<u64, Vec<u8>> = HashMap::new();
        for seed in seeds {
            for round in 0..3000 {
                let mut p = seed.to_vec();
                for _ in 0..1 + random(6) {
                    let i = random(p.len());
                    p[i] = match (round % 3, p[i]) {
                        (0 | 1, b'0'..=b'9') => b'0' + random(10) as u8,
                        (2, _) => b"0a9Z.: \r\n-"[random(10)],
                        (_, c) => c,
                    };
                }
                let cut = round % 7 == 0;
                let parsed = SipMessage::parse_captured(&p, cut);
                let key = builder.build(&parsed).unwrap().to_vec();
                let mut msg = SipMessage::unparsed(&p, cut);
                match recall.parse(&mut msg) {
                    Some(r) => {
                        recalled_count += 1;
                        assert_eq!(
                            described(&Facts::new(&msg, None).with_places(r.places())),
                            described(&Facts::new(&parsed, None)),
                            "{}",
                            String::from_utf8_lossy(&p)
                        );
                        assert_eq!(keys[&r.id], key, "{}", String::from_utf8_lossy(&p));
                    }
                    None => {
                        recall.learn(&mut builder, &Facts::new(&parsed, None), Kept::new(0, 0));
                        let again = recall
                            .parse(&mut SipMessage::unparsed(&p, cut))
                            .expect("a template learnt is recalled");
                        keys.insert(again.id, key);
                    }
                }
            }
        }
        // Most redrawn digits are recalled.
        assert!(recalled_count > 5000, "{recalled_count}");
    }

    #[test]
    fn forgets_all_when_full() {
        let mut builder = KeyBuilder::default();
        let mut recall = Recall::new(2);
        for p in [
            &b"OPTIONS sip:a SIP/2.0\r\n\r\n"[..],
            b"OPTIONS sip:bb SIP/2.0\r\n\r\n",
            b"OPTIONS sip:ccc SIP/2.0\r\n\r\n",
        ] {
            recall.learn(
                &mut builder,
                &Facts::new(&SipMessage::parse(p), None),
                Kept::new(0, 0),
            );
        }
        assert_eq!(recall.len(), 1);
    }
}
