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
//!
//! Some scanners draw letters at random too: nmap's tags, branches and Call-IDs. Each of their
//! packets masks differently, but keeps its template's key and parse: the same bytes outside
//! the parts the key abstracts, its runs of letters and digits at the same places, each with
//! the same classes ([`Shape`]). A request's template is also kept by that shape, and a packet
//! of the shape is recalled as the template's (and kept as a template of its own).

use std::{collections::HashMap, sync::Arc};

use crate::sip::{Layout, PayloadKind, SipMessage, message::message_flags};

use super::{
    cache::{BuildIdentity, Kept},
    facts::{Facts, FieldPlaces},
    key::{self, FreeRun, KeyBuilder, MAX_KEY_BYTES},
};

/// A template recalled for a payload: its field places, and where its cache entry is.
#[derive(Clone, Copy, Debug)]
pub struct Recalled {
    id: u64,
    places: Option<FieldPlaces>,
}

impl Recalled {
    pub fn places(&self) -> Option<&FieldPlaces> {
        self.places.as_ref()
    }
}

struct Template {
    /// The capture's cut flag, then the payload masked (shared with the template's shape).
    masked: Arc<[u8]>,
    /// Digits outside the abstracted parts, by offset: a packet of the template has them too.
    kept_digits: Box<[(u16, u8)]>,
    layout: Layout,
    /// Read from the Content-Length's value, so checked per packet.
    truncated: bool,
    places: Option<FieldPlaces>,
    /// What it keeps of the classification cache.
    kept: Kept,
}

/// What the packets of a request's template have in common when they differ in more than the
/// values of digits, as nmap's differ in the random letters of their tags, branches and
/// Call-IDs: the places of their runs of letters and digits ([`key::runs_into`]), the bytes of
/// the runs they repeat, and the classes of the others ([`KeyBuilder::free_runs`]). Such a
/// packet has the template's key and parses as it did.
struct Shape {
    runs: Box<[u8]>,
    /// The letters and digits a packet of the template repeats, [`key::ANY_DIGITS`] where any
    /// digits will do, 0 elsewhere ([`key::has_fixed`]).
    fixed: Box<[u8]>,
    free: Box<[FreeRun]>,
    /// The template the shape was learnt with, and its masked payload: the template under that
    /// id is this one only if it still has it.
    template: u64,
    masked: Arc<[u8]>,
}

/// Shapes kept with the same places of runs: a template's runs of random letters hold one set
/// of classes or another (a short random tag may lack capitals), each a key of its own.
const SHAPES_ALIKE: usize = 8;

/// The templates met, by the hash of their masked payload.
pub(super) struct Recall {
    templates: HashMap<u64, Template, BuildIdentity>,
    /// The shapes of the requests' templates learnt from a parse, by the hash of the places of
    /// their runs ([`key::runs_into`]).
    shapes: HashMap<u64, Vec<Shape>, BuildIdentity>,
    /// Templates kept; when full, all are forgotten (they come back at their next packet).
    limit: usize,
    /// Room for the longest payload masked, the cut flag first; the first `masked_len` bytes
    /// are the last one (0: the last payload was too long to mask), `masked_hash` its hash.
    masked: Box<[u8]>,
    masked_len: usize,
    masked_hash: u64,
    /// Room for a payload's runs ([`key::runs_into`]).
    runs: Box<[u8]>,
}

impl Recall {
    pub fn new(limit: usize) -> Self {
        Recall {
            templates: HashMap::with_hasher(BuildIdentity),
            shapes: HashMap::with_hasher(BuildIdentity),
            limit: limit.max(1),
            masked: vec![0; MAX_KEY_BYTES + 1].into(),
            masked_len: 0,
            masked_hash: 0,
            runs: vec![0; MAX_KEY_BYTES].into(),
        }
    }

    /// Masks the payload into `self.masked`; its hash, or `None` for a payload longer than a
    /// key may be (such packets go without the cache).
    fn mask(&mut self, payload: &[u8], cut: bool) -> Option<u64> {
        self.masked_len = 0;
        let masked = self.masked.get_mut(..payload.len() + 1)?;
        masked[0] = u8::from(cut);
        key::mask_digits_into(payload, &mut masked[1..]);
        self.masked_len = masked.len();
        self.masked_hash = key::hash(masked);
        Some(self.masked_hash)
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

    /// The template of a request with the shape of one learnt ([`Shape`]): that one's, kept as
    /// the payload's own.
    fn reshape(&mut self, payload: &[u8]) -> Option<u64> {
        if self.masked_len == 0 || self.shapes.is_empty() {
            return None;
        }
        let runs = self.runs.get_mut(..payload.len())?;
        key::runs_into(payload, runs);
        let templates = &self.templates;
        // The newest first: a scanner's latest template is the likeliest.
        let t = self
            .shapes
            .get(&key::hash(runs))?
            .iter()
            .rev()
            .find_map(|shape| {
                let t = templates.get(&shape.template)?;
                let same = *shape.runs == *runs
                    && Arc::ptr_eq(&t.masked, &shape.masked)
                    && key::has_fixed(payload, &shape.fixed)
                    && shape.free.iter().all(|run| run.admits(payload))
                    && t.layout.truncated(payload) == t.truncated;
                same.then_some(t)
            })?;
        let template = Template {
            masked: self.masked().into(),
            kept_digits: t.kept_digits.clone(),
            layout: t.layout.clone(),
            truncated: t.truncated,
            places: t.places,
            kept: Kept::new(t.kept.entry, t.kept.generation),
        };
        let id = self.masked_hash;
        self.insert(id, template);
        Some(id)
    }

    /// Parses `msg` ([`SipMessage::unparsed`]), or, when its template is one met before (or
    /// has the shape of one, [`Shape`]), lays that template's parse over it; the template
    /// recalled, if any.
    pub fn parse(&mut self, msg: &mut SipMessage<'_>) -> Option<Recalled> {
        let cut = msg.has(message_flags::CAPTURE_CUT);
        let id = match self.find(msg.bytes(), cut) {
            Some((id, t)) => {
                msg.parse_or_lay(Some(&t.layout));
                return Some(Recalled {
                    id,
                    places: t.places,
                });
            }
            None if !cut => self.reshape(msg.bytes()),
            None => None,
        };
        let t = id.and_then(|id| self.templates.get(&id).map(|t| (id, t)));
        msg.parse_or_lay(t.map(|(_, t)| &t.layout));
        t.map(|(id, t)| Recalled {
            id,
            places: t.places,
        })
    }

    /// What a recalled template keeps of the classification cache.
    pub fn kept_mut(&mut self, recalled: &Recalled) -> Option<&mut Kept> {
        self.templates.get_mut(&recalled.id).map(|t| &mut t.kept)
    }

    /// Keeps `msg`'s template, with the cache entry its key has, and a request's shape.
    pub fn learn(&mut self, builder: &mut KeyBuilder, facts: &Facts<'_>, kept: Kept) {
        let msg = facts.msg;
        let cut = msg.has(message_flags::CAPTURE_CUT);
        let Some(id) = self.mask(msg.bytes(), cut) else {
            return;
        };
        let masked: Arc<[u8]> = self.masked().into();
        let kept_digits = builder.kept_digits(msg).into();
        let bytes = msg.bytes();
        let shape = (!cut && msg.kind() == PayloadKind::SipRequest).then(|| {
            let mut runs = vec![0; bytes.len()];
            key::runs_into(bytes, &mut runs);
            let (fixed, free) = builder.free_runs(msg);
            Shape {
                runs: runs.into(),
                fixed,
                free,
                template: id,
                masked: masked.clone(),
            }
        });
        self.insert(
            id,
            Template {
                masked,
                kept_digits,
                layout: msg.layout(),
                truncated: msg.truncated(),
                places: FieldPlaces::of(facts),
                kept,
            },
        );
        if let Some(shape) = shape {
            let alike = self.shapes.entry(key::hash(&shape.runs)).or_default();
            if alike.len() >= SHAPES_ALIKE {
                alike.remove(0);
            }
            alike.push(shape);
        }
    }

    fn insert(&mut self, id: u64, template: Template) {
        if self.templates.len() >= self.limit {
            self.templates.clear();
            self.shapes.clear();
        }
        self.templates.insert(id, template);
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
        let seeds: [&[u8]; 6] = [
            b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-123;rport\r\nFrom: \"sipvicious\"<sip:100@1.1.1.1>;tag=3435313131\r\nTo: \"sipvicious\"<sip:100@1.1.1.1>\r\nCall-ID: 4f3a91\r\nX-1: 22\r\nCSeq: 1 OPTIONS\r\nContact: <sip:100@10.0.0.1:5060>\r\nUser-Agent: IP4 MD5 a1b2\r\nContent-Length: 10\r\n\r\nv=0\r\n1=2\r\ns=x9\r\n",
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4\r\nContent-Length: 3\r\n\r\n123",
            b"\x16\x03\x01\x00\xa51234567890123456789012345678901234567890123456789012345678901abc12345",
            b"OPTIONS sip:1@2 SIP/2.0\nVia: SIP/2.0/UDP 9.9.9.9;branch=z9hG4bK1a2b3c\nContent-Length: 10\n\nabc",
            b"INVITE sip:1@[2001:db8::1]:5060 SIP/2.0\r\nf: 1 <sip:2@3>;tag=4\r\nt: <sip:5@6>\r\nv: SIP/2.0/TCP [2001:db8::2]:5;branch=z9hG4bK7\r\nm: sip:8@9\r\nCSeq: 10 INVITE\r\n\r\n",
            b"REGISTER sip:203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;rport;branch=z9hG4bKon6hsTfSByG4EO4XyWhareadM\r\nFrom: \"Nmap NSE\" <sip:user@203.0.113.10>;tag=00brZ3VCy3vGXCHLIBPX\r\nCall-ID: YC90EeRYCX1QAJum4H8sN_wkxbsK\r\nCSeq: 1234 REGISTER\r\nContent-Length:  0\r\n\r\n",
        ];
        let mut random = crate::fingerprint::key::tests::below();
        let mut builder = KeyBuilder::default();
        let mut recall = Recall::new(1 << 16);
        let (mut recalled_count, mut reshaped_count) = (0, 0);
        // The key of each template learnt, by the number it keeps as its entry: a recalled
        // template, reshaped or not, has the key of the message.
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for seed in seeds {
            for round in 0..4000 {
                let mut p = seed.to_vec();
                for _ in 0..1 + random(6) {
                    let i = random(p.len());
                    match (round % 5, p[i]) {
                        (0 | 1, b'0'..=b'9') => p[i] = b'0' + random(10) as u8,
                        (2, _) => p[i] = b"0a9Z.: \r\n-"[random(10)],
                        // A run of digits one longer or shorter.
                        (3, b'0'..=b'9') if random(2) == 0 => p.insert(i, b'0' + random(10) as u8),
                        (3, b'0'..=b'9') if p.len() > 1 => _ = p.remove(i),
                        // Another letter: of the same class (case, and a-f or not) two
                        // times in three, as random tags and branches are drawn.
                        (4, b'a'..=b'z' | b'A'..=b'Z') => {
                            let (case, hex) = (p[i] & 0x20, (p[i] | 0x20) <= b'f');
                            p[i] = match random(3) {
                                0 => (b'A' + random(26) as u8) | (random(2) as u8 * 0x20),
                                _ if hex => (b'A' + random(6) as u8) | case,
                                _ => (b'G' + random(20) as u8) | case,
                            };
                        }
                        _ => {}
                    }
                }
                let cut = round % 7 == 0;
                let parsed = SipMessage::parse_captured(&p, cut);
                let key = builder.build(&parsed).unwrap().to_vec();
                let mut msg = SipMessage::unparsed(&p, cut);
                let known = recall.len();
                match recall.parse(&mut msg) {
                    Some(r) => {
                        recalled_count += 1;
                        reshaped_count += usize::from(recall.len() > known);
                        assert_eq!(
                            described(&Facts::new(&msg, None).with_places(r.places())),
                            described(&Facts::new(&parsed, None)),
                            "{}",
                            String::from_utf8_lossy(&p)
                        );
                        let entry = recall.kept_mut(&r).expect("recalled").entry;
                        assert_eq!(keys[entry as usize], key, "{}", String::from_utf8_lossy(&p));
                    }
                    None => {
                        let entry = Kept::new(keys.len() as u32, 0);
                        recall.learn(&mut builder, &Facts::new(&parsed, None), entry);
                        recall
                            .parse(&mut SipMessage::unparsed(&p, cut))
                            .expect("a template learnt is recalled");
                        keys.push(key);
                    }
                }
            }
        }
        // Most redrawn digits are recalled, and runs of other lengths are often reshaped.
        assert!(recalled_count > 7000, "{recalled_count}");
        assert!(reshaped_count > 100, "{reshaped_count}");
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
