//! Whether a text condition holds for every string a key allows, for none, or depends.
//!
//! A field's value, seen through the key ([`super::key`]), is a sequence of kept bytes and runs
//! of a given length over some character classes: a set of strings. A condition whose outcome
//! is the same over the whole set is decided once for the key. Kept values are evaluated as
//! they are; otherwise the condition's automaton (the rule's regex, or the literal test written
//! as one) is run over the set: every state it can be in after each position, and whether a
//! match was seen on the way. All paths matched: it holds for every string; none did: for none.

use regex_automata::{
    Anchored, MatchKind,
    dfa::{Automaton, StartKind, dense},
    nfa::thompson,
    util::{primitives::StateID, start, syntax},
};

use super::{
    key::{Item, class_bytes},
    rules::Op,
};

/// Largest automaton built for a condition; a bigger one leaves the condition to be evaluated
/// per packet.
const DFA_SIZE_LIMIT: usize = 4 << 20;

pub type Dfa = dense::DFA<Vec<u32>>;

fn escape(bytes: &[u8], out: &mut String, any_case: bool) {
    for &b in bytes {
        if any_case && b.is_ascii_alphabetic() {
            out.push_str(&format!(
                "[{}{}]",
                b.to_ascii_lowercase() as char,
                b.to_ascii_uppercase() as char
            ));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
}

/// The pattern an operator tests, for the automaton; `None` for operators that are not tests
/// of a text value.
fn pattern(op: &Op) -> Option<String> {
    let mut p = String::from("(?-u)");
    let whole = |p: &mut String, alternatives: &[&[u8]], any_case: bool| {
        p.push_str("^(?:");
        for (i, a) in alternatives.iter().enumerate() {
            if i > 0 {
                p.push('|');
            }
            escape(a, p, any_case);
        }
        p.push_str(")$");
    };
    match op {
        Op::EqBytes(w) => whole(&mut p, &[w], false),
        Op::NoCase(w) => whole(&mut p, &[w], true),
        Op::OneOf(set) => {
            let set: Vec<&[u8]> = set.iter().map(Vec::as_slice).collect();
            whole(&mut p, &set, false);
        }
        Op::Prefix(w) => {
            p.push('^');
            escape(w, &mut p, false);
        }
        Op::Suffix(w) => {
            escape(w, &mut p, false);
            p.push('$');
        }
        Op::Contains(finder) => escape(finder.needle(), &mut p, false),
        // The rule's own pattern, read as `regex::bytes::Regex` reads it: Unicode classes, a
        // haystack that need not be UTF-8.
        Op::Regex(re) => return Some(re.as_str().to_string()),
        _ => return None,
    }
    Some(p)
}

/// The automaton of a text condition, or `None` (not a text test, or too big to build).
pub fn build(op: &Op) -> Option<Dfa> {
    let pattern = pattern(op)?;
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .match_kind(MatchKind::All)
                .start_kind(StartKind::Unanchored)
                .dfa_size_limit(Some(DFA_SIZE_LIMIT))
                .determinize_size_limit(Some(DFA_SIZE_LIMIT)),
        )
        .syntax(syntax::Config::new().utf8(false))
        .thompson(thompson::Config::new().utf8(false))
        .build(&pattern)
        .ok()
}

/// The operator evaluated on a value known byte for byte.
pub fn holds_on(op: &Op, b: &[u8]) -> Option<bool> {
    Some(match op {
        Op::EqBytes(want) => b == want.as_slice(),
        Op::NoCase(want) => b.eq_ignore_ascii_case(want),
        Op::Prefix(p) => b.starts_with(p),
        Op::Suffix(s) => b.ends_with(s),
        Op::Contains(finder) => finder.find(b).is_some(),
        Op::Regex(re) => re.is_match(b),
        Op::OneOf(set) => set.iter().any(|s| s == b),
        _ => return None,
    })
}

/// The outcome of a text operator for every string `items` allows: `Some` when it is the same
/// for all of them. `dfa` is the operator's automaton (built on first need by the caller).
pub fn decide<'d>(op: &Op, items: &[Item], dfa: impl FnOnce() -> Option<&'d Dfa>) -> Option<bool> {
    if items.iter().all(|i| matches!(i, Item::Byte(_))) {
        let bytes: Vec<u8> = items
            .iter()
            .map(|i| match i {
                Item::Byte(b) => *b,
                Item::Run { .. } => 0,
            })
            .collect();
        return holds_on(op, &bytes);
    }
    over_set(dfa()?, items)
}

/// Runs the automaton over every string of the set at once.
pub fn over_set(dfa: &Dfa, items: &[Item]) -> Option<bool> {
    let start = dfa
        .start_state(&start::Config::new().anchored(Anchored::No))
        .ok()?;
    // States of the strings that have not matched yet (a dead state included: such a string
    // never matches); whether some string has matched.
    let mut live: Vec<StateID> = vec![start];
    let mut matched = false;
    let mut next: Vec<StateID> = Vec::new();
    let mut ends: Vec<StateID> = Vec::new();
    let classes = dfa.byte_classes();
    let mut step = |live: &mut Vec<StateID>, matched: &mut bool, bytes: &[u8]| {
        next.clear();
        for &s in live.iter() {
            for &b in bytes {
                let n = dfa.next_state(s, b);
                if dfa.is_match_state(n) {
                    *matched = true;
                } else {
                    next.push(n);
                }
            }
        }
        next.sort_unstable();
        next.dedup();
        std::mem::swap(live, &mut next);
    };
    for item in items {
        match *item {
            // Most of a key is literal bytes followed by one live state: one transition.
            Item::Byte(b) if live.len() == 1 => {
                let n = dfa.next_state(live[0], b);
                if dfa.is_match_state(n) {
                    matched = true;
                    live.clear();
                } else {
                    live[0] = n;
                }
            }
            Item::Byte(b) => step(&mut live, &mut matched, &[b]),
            Item::Run {
                classes: set,
                min,
                max,
            } => {
                // One byte per equivalence class of the automaton is enough.
                let mut reps: Vec<u8> = Vec::new();
                let mut seen = [false; 256];
                for b in class_bytes(set) {
                    let c = usize::from(classes.get(b));
                    if !seen[c] {
                        seen[c] = true;
                        reps.push(b);
                    }
                }
                // The strings of every allowed length go on together.
                ends.clear();
                for len in 1..=max {
                    let before = (len > min).then(|| live.clone());
                    step(&mut live, &mut matched, &reps);
                    if len >= min {
                        ends.extend_from_slice(&live);
                    }
                    // The same set again (both sorted): every longer string reaches it too,
                    // and adds nothing to `ends` or `matched`.
                    if live.is_empty() || before.is_some_and(|b| b == live) {
                        break;
                    }
                }
                ends.sort_unstable();
                ends.dedup();
                std::mem::swap(&mut live, &mut ends);
            }
        }
        if live.is_empty() {
            // Every string has matched.
            return Some(true);
        }
        if live.iter().all(|&s| dfa.is_dead_state(s)) {
            // No string that has not matched yet can match any more (most anchored patterns
            // die within a few bytes of a key they do not fit): the end would say the same.
            return if matched { None } else { Some(false) };
        }
    }
    let mut unmatched_at_end = false;
    for &s in &live {
        if dfa.is_match_state(dfa.next_eoi_state(s)) {
            matched = true;
        } else {
            unmatched_at_end = true;
        }
    }
    match (matched, unmatched_at_end) {
        (true, false) => Some(true),
        (false, _) => Some(false),
        (true, true) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::key::{DIGIT, LOWER_HEX, LOWER_OTHER, UPPER_OTHER};

    fn items(parts: &[(&str, u8, u16)]) -> Vec<Item> {
        let mut out = Vec::new();
        for (text, classes, len) in parts {
            out.extend(text.bytes().map(Item::Byte));
            if *len > 0 {
                out.push(Item::Run {
                    classes: *classes,
                    min: *len,
                    max: *len,
                });
            }
        }
        out
    }

    fn regex(re: &str) -> Op {
        Op::Regex(regex::bytes::Regex::new(re).unwrap())
    }

    fn decide_op(op: &Op, items: &[Item]) -> Option<bool> {
        let dfa = build(op).map(|d| &*Box::leak(Box::new(d)));
        decide(op, items, || dfa)
    }

    #[test]
    fn regexes_over_sets() {
        let svmap = items(&[("branch=z9hG4bK-", DIGIT, 10), (";rport", 0, 0)]);
        let re = regex("^branch=z9hG4bK-[0-9]{1,10};rport$");
        assert_eq!(decide_op(&re, &svmap), Some(true));
        let longer = items(&[("branch=z9hG4bK-", DIGIT, 11), (";rport", 0, 0)]);
        assert_eq!(decide_op(&re, &longer), Some(false));
        // Letters where digits are wanted: some strings match (all digits), some do not.
        let mixed = items(&[("branch=z9hG4bK-", DIGIT | LOWER_HEX, 10), (";rport", 0, 0)]);
        assert_eq!(decide_op(&re, &mixed), None);
        let zmap = items(&[
            ("branch=", LOWER_OTHER | UPPER_OTHER, 6),
            (".", DIGIT, 10),
            (";rport;alias", 0, 0),
        ]);
        let re = regex(r"^branch=[A-Za-z]{6}\.[0-9]{10};rport;alias$");
        assert_eq!(decide_op(&re, &zmap), Some(true));
        // Unanchored patterns: somewhere in the value.
        let contact = items(&[("expires=", DIGIT, 3)]);
        assert_eq!(decide_op(&regex("expires=120"), &contact), None);
        assert_eq!(decide_op(&regex("expires=1200"), &contact), Some(false));
        assert_eq!(decide_op(&regex("expires"), &contact), Some(true));
        // A range of lengths: all inside the regex's range, or not.
        let range = |min, max| {
            vec![
                Item::Byte(b'-'),
                Item::Run {
                    classes: DIGIT,
                    min,
                    max,
                },
            ]
        };
        let re = regex("^-[0-9]{1,10}$");
        assert_eq!(decide_op(&re, &range(6, 10)), Some(true));
        assert_eq!(decide_op(&re, &range(11, 16)), Some(false));
        assert_eq!(decide_op(&re, &range(4, 12)), None);
        assert_eq!(decide_op(&regex("^-[0-9]{8}$"), &range(6, 10)), None);
    }

    /// Every string a sequence of items allows.
    fn strings(items: &[Item]) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new()];
        for item in items {
            out = match *item {
                Item::Byte(b) => out
                    .into_iter()
                    .map(|mut s| {
                        s.push(b);
                        s
                    })
                    .collect(),
                Item::Run { classes, min, max } => {
                    let bytes: Vec<u8> = class_bytes(classes).collect();
                    let mut all = Vec::new();
                    let mut layer = out;
                    for len in 1..=max {
                        layer = layer
                            .iter()
                            .flat_map(|s| {
                                bytes.iter().map(move |&b| {
                                    let mut s = s.clone();
                                    s.push(b);
                                    s
                                })
                            })
                            .collect();
                        if len >= min {
                            all.extend(layer.iter().cloned());
                        }
                    }
                    all
                }
            };
        }
        out
    }

    #[test]
    fn over_set_says_what_every_string_says() {
        // Anchored patterns that die early or late, unanchored ones that never die, runs of
        // fixed and ranged lengths: the set's verdict against each string's, one by one.
        let patterns = [
            "^a[0-9]+b$",
            "^ab",
            "a1",
            "^[0-9]{2}",
            "b$",
            "^a[0-9]{1,2}$",
            "1b",
            "^b",
            "[a-f]",
        ];
        let mut state = 9u64;
        let mut random = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut decided = 0;
        for _ in 0..1000 {
            let mut set = Vec::new();
            let mut runs = 0;
            for _ in 0..1 + random(5) {
                // At most two runs, so that the strings can be listed.
                let kind = if runs < 2 { random(5) } else { 2 };
                runs += usize::from(kind < 2);
                set.push(match kind {
                    0 => Item::Run {
                        classes: DIGIT,
                        min: 1 + random(2) as u16,
                        max: 2,
                    },
                    1 => Item::Run {
                        classes: LOWER_HEX,
                        min: 1,
                        max: 1,
                    },
                    _ => Item::Byte(b"ab1"[random(3) as usize]),
                });
            }
            let all = strings(&set);
            for p in patterns {
                let re = regex::bytes::Regex::new(p).unwrap();
                let holds: Vec<bool> = all.iter().map(|s| re.is_match(s)).collect();
                let want = if holds.iter().all(|&h| h) {
                    Some(true)
                } else if holds.iter().all(|&h| !h) {
                    Some(false)
                } else {
                    None
                };
                let dfa = build(&regex(p)).expect("an automaton");
                assert_eq!(over_set(&dfa, &set), want, "{p} over {set:?}");
                decided += usize::from(want.is_some());
            }
        }
        assert!(decided > 2000, "{decided}");
    }

    #[test]
    fn literal_tests_over_sets() {
        let ua = items(&[
            ("", LOWER_OTHER | LOWER_HEX, 8),
            ("-", LOWER_OTHER | LOWER_HEX, 7),
        ]);
        let eq = |s: &str| Op::EqBytes(s.as_bytes().to_vec());
        assert_eq!(decide_op(&eq("friendly-scanner"), &ua), None);
        assert_eq!(decide_op(&eq("Nmap NSE"), &ua), Some(false));
        assert_eq!(decide_op(&eq("friendly_scanner"), &ua), Some(false));
        assert_eq!(
            decide_op(&Op::NoCase(b"FRIENDLY-SCANNER".to_vec()), &ua),
            None
        );
        assert_eq!(
            decide_op(&Op::Prefix(b"sipcli/".to_vec()), &ua),
            Some(false)
        );
        assert_eq!(
            decide_op(
                &Op::OneOf(vec![b"iWar".to_vec(), b"sipvicious".to_vec()]),
                &ua
            ),
            Some(false)
        );
        let kept = items(&[("application/sdp", 0, 0)]);
        assert_eq!(decide_op(&eq("application/sdp"), &kept), Some(true));
        assert_eq!(decide_op(&eq("text/plain"), &kept), Some(false));
        let contains = Op::Contains(Box::new(memchr::memmem::Finder::new(b"smap@").into_owned()));
        assert_eq!(decide_op(&contains, &ua), Some(false));
    }

    #[test]
    fn high_bytes_and_unicode_classes() {
        // `[^"]` in a Unicode regex does not match a byte that is not UTF-8.
        let re = regex(r#"^a[^"]b$"#);
        let v = vec![Item::Byte(b'a'), Item::Byte(0xff), Item::Byte(b'b')];
        assert_eq!(decide_op(&re, &v), Some(false));
        let v = items(&[("a", UPPER_OTHER, 1), ("b", 0, 0)]);
        assert_eq!(decide_op(&re, &v), Some(true));
    }
}
