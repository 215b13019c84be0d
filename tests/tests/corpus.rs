//! The corpus and its manifest agree: every capture is listed once with a known tool, and holds
//! the number of packets the manifest says. Needs no privileges.

use std::{collections::BTreeMap, path::PathBuf};

use sensor::offline::CaptureReader;

const TOOLS: &[&str] = &[
    "svmap",
    "svwar",
    "svcrack",
    "nmap-nse",
    "nmap-probe",
    "sipsak",
    "sipp",
    "masscan",
    "zmap",
    "benign",
];

fn string_value(line: &str, key: &str) -> Option<String> {
    let rest = line
        .strip_prefix(key)?
        .trim_start()
        .strip_prefix('=')?
        .trim();
    Some(rest.strip_prefix('"')?.strip_suffix('"')?.to_string())
}

#[test]
fn manifest_lists_every_capture_with_its_packet_count() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let manifest = std::fs::read_to_string(dir.join("manifest.toml")).expect("manifest.toml");
    // A deliberately small reader for the flat [[capture]] tables the script writes.
    let mut entries: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut file = None;
    let mut tool = None;
    for line in manifest.lines().map(str::trim) {
        if let Some(v) = string_value(line, "file") {
            file = Some(v);
        } else if let Some(v) = string_value(line, "tool") {
            tool = Some(v);
        } else if let Some(v) = line.strip_prefix("packets = ") {
            let packets: usize = v.parse().expect("packet count");
            let (f, t) = (file.take().expect("file"), tool.take().expect("tool"));
            assert!(TOOLS.contains(&t.as_str()), "{f}: unknown tool {t}");
            assert!(
                entries.insert(f.clone(), (t, packets)).is_none(),
                "{f} listed twice"
            );
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pcap"))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, entries.keys().cloned().collect::<Vec<_>>());
    for (name, (_, packets)) in &entries {
        let read = CaptureReader::open(dir.join(name))
            .expect("open")
            .collect::<Result<Vec<_>, _>>()
            .expect("read");
        assert_eq!(read.len(), *packets, "{name}");
    }
    for tool in TOOLS.iter().filter(|t| **t != "sipp") {
        assert!(
            entries.values().any(|(t, _)| t == tool),
            "no capture for {tool}"
        );
    }
}
