//! Writes the seed inputs of the fuzz targets (fuzz/seeds/<target>/seed-<hash>) from the frames
//! the kernel tests use: every frame of tests/corpus, the differential test's crafted frames, the
//! records and payloads they give, the attribution seeds' payloads, and the capture files
//! themselves. Idempotent: a seed is named by a hash of its bytes. `cargo xtask fuzz` runs it.

use std::{collections::BTreeSet, path::Path};

use sensor::{
    capture::PortSet,
    offline::{FrameContext, extract},
};
use sensor_common::{CaptureRecord, MatchAction, SensorConfig, TCP_OPTIONS_CAPACITY};
use sensor_tests::mutation::{corpus_frames, crafted_frames};

/// The payloads the fingerprint tests attribute (sensor/src/fingerprint/tests.rs: the first
/// seed's two svmap OPTIONS, the second seed's SIPScan REGISTER), line breaks as printed.
const ATTRIBUTION_PAYLOADS: &[&str] = &[
    "OPTIONS sip:100@192.0.2.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1047900479;rport\nContent-Length: 0\nFrom: \"sipvicious\"<sip:100@1.1.1.1> tag=34353131313634613133633401353835363538393133\nAccept: application/sdp\nUser-Agent: friendly-scanner\nTo: \"sipvicious\"<sip:100@1.1.1.1>\nContact: sip:100@127.0.0.1:5060\nCSeq: 1 OPTIONS\nCall-ID: 965192181434457134540520\nMax-Forwards: 70\n",
    "OPTIONS sip:100@192.0.2.1 SIP/2.0\nVia: SIP/2.0/UDP 192.168.1.9:5060;branch=z9hG4bK-17038962;rport\nContent-Length: 0\nFrom: \"sipsscuser\"<sip:100@192.168.1.9> tag=77194458456158489721772408023096992174807017852\nAccept: application/sdp\nUser-Agent: sundayddr\nTo: \"sipscc\"<sip:100@192.168.1.9>\nContact: sip:100@192.168.1.9:5060\nCSeq: 1 OPTIONS\nCall-ID: 124296019799750175018545983\nMax-Forwards: 70\n",
    "REGISTER sip:thisisthecanary@example.com SIP/2.0\nVia: SIP/2.0/TCP 172.19.6.194:3327;branch=el7mCh5QhC6WNg\nFrom: test ;tag=vkffYiKFjn\nTo: test\nCall-ID: 9262@172.19.6.194\nCSeq: 9262 REGISTER\nContact:\nMax_forwards: 70\nUser Agent: SIPScan 1.0\nContent-Type: application/sdp\nSubject: SIPScan Probe\nExpires: 7200\nContent-Length: 0\n\n",
];

/// FNV-1a, 64 bits: a stable name for a seed's bytes.
fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

struct Seeds {
    dir: std::path::PathBuf,
    written: usize,
    present: usize,
    seen: BTreeSet<u64>,
}

impl Seeds {
    fn new(root: &Path, target: &str) -> std::io::Result<Self> {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            written: 0,
            present: 0,
            seen: BTreeSet::new(),
        })
    }

    fn add(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let hash = fnv64(bytes);
        if !self.seen.insert(hash) {
            return Ok(());
        }
        let path = self.dir.join(format!("seed-{hash:016x}"));
        if path.exists() {
            self.present += 1;
            return Ok(());
        }
        std::fs::write(path, bytes)?;
        self.written += 1;
        Ok(())
    }

    fn report(&self) {
        println!(
            "{}: {} seeds ({} new)",
            self.dir.display(),
            self.seen.len(),
            self.written
        );
    }
}

fn record_bytes(record: &CaptureRecord) -> &[u8] {
    // SAFETY: CaptureRecord is plain integers with no padding (checked in sensor-common).
    unsafe {
        std::slice::from_raw_parts(
            (record as *const CaptureRecord).cast::<u8>(),
            CaptureRecord::SIZE,
        )
    }
}

fn main() -> std::io::Result<()> {
    let root = xtask::workspace_root().join("fuzz/seeds");
    let mut sip = Seeds::new(&root, "sip_parse")?;
    // The same inputs: a cut flag, then a payload.
    let mut recall = Seeds::new(&root, "recall")?;
    let mut fingerprint = Seeds::new(&root, "fingerprint")?;
    let mut extractor = Seeds::new(&root, "extract")?;
    let mut captures = Seeds::new(&root, "capture_reader")?;

    let every_port: PortSet = "1-65535".parse().expect("ports");
    let config = SensorConfig::new(MatchAction::Drop, true, sensor_common::DEFAULT_PREFIX_LEN);
    let mut frames = corpus_frames();
    frames.extend(crafted_frames());
    for (_, frame) in &frames {
        // extract: flags (source matching), prefix 1024, the default ports, the frame.
        let mut input = vec![0b10, 0x04, 0x00, 0];
        input.extend_from_slice(frame);
        extractor.add(&input)?;
        let Ok(record) = extract(
            frame,
            frame.len() as u32,
            &config,
            &every_port,
            &FrameContext::default(),
        ) else {
            continue;
        };
        let prefix = CaptureRecord::HEADER_LEN + TCP_OPTIONS_CAPACITY;
        let captured = usize::from(record.captured_len);
        fingerprint.add(&record_bytes(&record)[..prefix + captured])?;
        let payload = &record.payload[..captured];
        if !payload.is_empty() {
            let mut input = vec![u8::from(record.captured_len < record.payload_len)];
            input.extend_from_slice(payload);
            sip.add(&input)?;
            recall.add(&input)?;
        }
    }
    for text in ATTRIBUTION_PAYLOADS {
        for payload in [text.to_string(), text.replace('\n', "\r\n")] {
            let mut input = vec![0];
            input.extend_from_slice(payload.as_bytes());
            sip.add(&input)?;
            recall.add(&input)?;
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(sensor_tests::corpus::dir())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("pcap") | Some("pcapng")
            )
        })
        .collect();
    files.sort();
    for file in files {
        captures.add(&std::fs::read(file)?)?;
    }
    for seeds in [&sip, &recall, &fingerprint, &extractor, &captures] {
        seeds.report();
    }
    Ok(())
}
