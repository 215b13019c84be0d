//! The terminal lines `cargo xtask run` prints for the sensor's events: time, addresses, IP
//! fields, the first payload line and the tool.
//!
//! The sensor escapes every attacker-written string before it writes an event, but what reaches a
//! terminal is checked again here, because the events file is only data: each field shown is cut
//! to a fixed width and anything outside printable ASCII becomes `\xNN`, so no line can carry a
//! control character, an ANSI escape or a C1 control, whatever the file holds.

use std::fmt::Write as _;

/// The column titles.
pub fn header() -> String {
    format!(
        "{:<15} {:<5} {:<44} {:<22} payload",
        "time", "proto", "source -> destination", "ip"
    )
}

/// Longest payload text shown.
const PAYLOAD_SHOWN: usize = 60;
/// Longest tool name shown.
const TOOL_SHOWN: usize = 32;

/// Printable ASCII, at most `max` characters (then `...`); every other character as `\xNN` per
/// UTF-8 byte.
pub fn terminal_safe(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 4);
    for (shown, c) in s.chars().enumerate() {
        if shown >= max {
            out.push_str("...");
            break;
        }
        if (' '..='~').contains(&c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

fn text(doc: &serde_json::Value, max: usize) -> String {
    match doc {
        serde_json::Value::String(s) => terminal_safe(s, max),
        serde_json::Value::Null => "?".into(),
        other => terminal_safe(&other.to_string(), max),
    }
}

/// The line for one NDJSON line, `None` for lines that are not `sip_probe` events.
pub fn event_line(line: &str) -> Option<String> {
    let doc = serde_json::from_str::<serde_json::Value>(line).ok()?;
    if doc["event_type"] != "sip_probe" {
        return None;
    }
    let time = doc["timestamp"]
        .as_str()
        .and_then(|t| t.get(11..26))
        .map(|t| terminal_safe(t, 15))
        .unwrap_or_default();
    let flow = format!(
        "{} {} -> {} {}",
        text(&doc["src_ip"], 39),
        text(&doc["src_port"], 5),
        text(&doc["dest_ip"], 39),
        text(&doc["dest_port"], 5)
    );
    let ip = format!(
        "ttl={} id={} {}",
        text(&doc["ip"]["ttl"], 3),
        doc["ip"]["id"]
            .as_u64()
            .map(|i| i.to_string())
            .unwrap_or_else(|| "-".into()),
        if doc["ip"]["df"] == true { "DF" } else { "" }
    );
    let printable = doc["payload"]["printable"].as_str().unwrap_or("");
    let first_line = printable.split("\\r\\n").next().unwrap_or("");
    let payload = match doc["tcp"]["flags"].as_str() {
        Some(flags) if printable.is_empty() => format!("[TCP {}]", terminal_safe(flags, 8)),
        _ => terminal_safe(first_line, PAYLOAD_SHOWN),
    };
    let tool = doc["fingerprint"]["tool"]
        .as_str()
        .map(|t| format!("  <{}>", terminal_safe(t, TOOL_SHOWN)))
        .unwrap_or_default();
    Some(format!(
        "{time:<15} {:<5} {flow:<44} {ip:<22} {payload}{tool}",
        text(&doc["proto"], 5)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_fields_never_reach_the_terminal() {
        // A tampered events file: raw ESC, C1 controls and a long tool name.
        let line = serde_json::json!({
            "event_type": "sip_probe",
            "timestamp": "2026-01-01T00:00:00.000000Z",
            "src_ip": "198.51.100.2\u{1b}[2J",
            "src_port": 5060,
            "dest_ip": "203.0.113.9",
            "dest_port": 5060,
            "proto": "UDP",
            "ip": {"ttl": 64, "id": 0, "df": true},
            "payload": {"printable": "OPTIONS \u{1b}]0;owned\u{7}\u{9b}2J\u{85} sip:x SIP/2.0\\r\\n"},
            "fingerprint": {"tool": "x".repeat(500) + "\u{1b}[31m"},
        })
        .to_string();
        let shown = event_line(&line).unwrap();
        assert!(shown.bytes().all(|b| (0x20..0x7f).contains(&b)), "{shown}");
        assert!(
            shown.contains("\\x1b]0;owned\\x07\\xc2\\x9b2J\\xc2\\x85"),
            "{shown}"
        );
        assert!(shown.len() < 300, "{}", shown.len());
        assert_eq!(event_line("{\"event_type\":\"stats\"}"), None);
        assert_eq!(event_line("not json \u{1b}[2J"), None);
    }
}
