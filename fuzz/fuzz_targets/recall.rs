//! The classification cache's recall against the parser: a payload's template is learnt, then
//! the payload with its digits redrawn is read through the cache. Whatever the cache lays over
//! it (a recalled template's parse and field places) must be what parsing it gives, and its
//! verdict the engine's. So must it for the payload with some of its runs of digits made longer
//! or shorter, and with letters redrawn (a template's shape, recognised). The first byte says
//! whether the capture was cut; the payload's own bytes seed the redrawing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::{
    fingerprint::{ClassCache, Recalled, facts::Facts, recall::described},
    sip::SipMessage,
};

fuzz_target!(|data: &[u8]| {
    let engine = sensor_fuzz::engine();
    let (cut, payload) = match data.split_first() {
        Some((flag, rest)) => (flag & 1 == 1, rest),
        None => (false, data),
    };
    let mut cache = ClassCache::new(4);
    let classify = |cache: &mut ClassCache, bytes: &[u8]| {
        let mut msg = SipMessage::unparsed(bytes, cut);
        let recalled = cache.parse(&mut msg);
        let facts = Facts::new(&msg, None).with_places(recalled.as_ref().and_then(Recalled::places));
        let verdict = cache.classify(engine, &facts, recalled.as_ref());
        let cached = cache.fingerprint(engine, &verdict, &facts, None);
        let parsed = SipMessage::parse_captured(bytes, cut);
        assert_eq!(described(&facts), described(&Facts::new(&parsed, None)));
        let reference = engine.classify_packet(&parsed, None, None);
        assert_eq!(
            (
                cached.rule_id(),
                cached.confidence.to_bits(),
                &cached.evidence,
                cached.template
            ),
            (
                reference.rule_id(),
                reference.confidence.to_bits(),
                &reference.evidence,
                reference.template
            )
        );
    };
    // Twice: a template gets its cache entry, and is learnt, at its second sighting.
    classify(&mut cache, payload);
    classify(&mut cache, payload);
    let mut state = payload.iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let redrawn: Vec<u8> = payload
        .iter()
        .map(|&b| {
            if b.is_ascii_digit() {
                b'0' + (next() % 10) as u8
            } else {
                b
            }
        })
        .collect();
    classify(&mut cache, &redrawn);
    // Runs of digits of other lengths: a digit left out or doubled, here and there.
    let mut resized = Vec::with_capacity(payload.len() + 16);
    for &b in payload {
        match (b.is_ascii_digit(), next() % 6) {
            (true, 0) => {}
            (true, 1) => resized.extend([b, b'0' + (next() % 10) as u8]),
            _ => resized.push(b),
        }
    }
    classify(&mut cache, &resized);
    // Letters redrawn, mostly within their class, as random tags and branches are: the
    // template's shape, recognised.
    let relettered: Vec<u8> = payload
        .iter()
        .map(|&b| match (b.is_ascii_alphabetic(), next() % 4) {
            (true, 0) => b'A' + (next() % 26) as u8 | (next() % 2) as u8 * 0x20,
            (true, 1 | 2) if (b | 0x20) <= b'f' => b'A' + (next() % 6) as u8 | (b & 0x20),
            (true, 1 | 2) => b'G' + (next() % 20) as u8 | (b & 0x20),
            _ => b,
        })
        .collect();
    classify(&mut cache, &relettered);
});
