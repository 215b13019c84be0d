//! Prometheus metrics: the text exposition format (0.0.4) and a small HTTP/1.1 server answering
//! `GET /metrics`.
//!
//! The server does not hold the numbers: for each scrape it asks the agent's loop, which owns the
//! kernel program and the pipeline, for a fresh exposition through a channel, so a scrape reads
//! the kernel's per-CPU counters at that moment and never takes a lock on the record path.

use std::{
    collections::VecDeque,
    fmt::Write as _,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use sensor_common::Counter;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, oneshot},
};

use crate::counters::{KernelCounters, PerCpuCounters};

/// Longest request head read; a scrape's is a few hundred bytes.
const MAX_REQUEST: usize = 8192;
/// A client gets this long to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait for a slot, so a flood of connections cannot make the
/// agent build expositions without bound.
const MAX_CONNECTIONS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A text exposition being written: families in order, each with HELP and TYPE.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family. Counter names end in `_total`, as the exposition format's linter wants.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(kind != Kind::Counter || name.ends_with("_total"), "{name}");
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// A sample of the family just started.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = match value.into() {
            Value::Int(v) => writeln!(self.text, " {v}"),
            Value::Float(v) if v.is_finite() => writeln!(self.text, " {v}"),
            Value::Float(_) => writeln!(self.text, " NaN"),
        };
    }

    /// A family of one unlabelled counter.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Counter, help);
        self.sample(name, &[], value);
    }

    /// A family of one unlabelled gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: impl Into<Value>) {
        self.family(name, Kind::Gauge, help);
        self.sample(name, &[], value);
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

/// A sample value.
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(u64::from(v))
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Label values may hold any text; `\`, `"` and newlines are escaped as the format says, and
/// control characters never reach a scraper's terminal.
fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// What each kernel counter counts, for HELP.
fn kernel_help(counter: Counter) -> &'static str {
    match counter {
        Counter::FramesSeen => "Frames the XDP program saw.",
        Counter::NonIp => "Frames that are not IPv4 or IPv6 after at most two VLAN tags.",
        Counter::Truncated => "Frames cut short inside a header they announce.",
        Counter::Malformed => "Frames with impossible header values.",
        Counter::NonFirstFragment => "IP fragments with a non-zero offset (no ports to match).",
        Counter::OtherL4 => "IP packets that are neither UDP nor TCP.",
        Counter::Ipv6ExtensionLimit => {
            "IPv6 packets whose extension header chain is longer than the program follows."
        }
        Counter::PortMiss => "UDP or TCP frames whose ports are not in the set.",
        Counter::Matched => "Frames whose port is in the set.",
        Counter::Emitted => "Records written to the ring buffer.",
        Counter::RingFull => {
            "Ring buffer losses: matched frames whose record was lost because the ring buffer was full."
        }
        Counter::RateLimited => "Matched frames shed by the per-source rate limit.",
        Counter::SynAckSent => "SYN-ACKs sent by the reactive responder.",
        Counter::SynAckRefused => {
            "SYNs left unanswered because their source was over its SYN-ACK rate."
        }
        Counter::ReactiveOutOfScope => "SYNs to a matched port outside the reactive prefixes.",
        Counter::CookieValid => {
            "ACKs carrying a valid SYN cookie (handshakes completed with the sensor)."
        }
        Counter::CookieInvalid => "ACKs to a reactive prefix whose cookie did not validate.",
        Counter::RstSent => "RSTs sent in answer to data (reactive policy reset).",
        Counter::ReplyFailed => "Replies that could not be built.",
    }
}

/// The kernel counters: `sensor_kernel_<name>_total` summed over CPUs, and
/// `sensor_kernel_percpu_<name>_total{cpu="N"}` per CPU when the per-CPU values are known (live).
pub fn write_kernel(
    out: &mut Exposition,
    summed: &KernelCounters,
    per_cpu: Option<&PerCpuCounters>,
) {
    for (counter, value) in summed.iter() {
        let name = format!("sensor_kernel_{}_total", counter.name());
        out.counter(&name, kernel_help(counter), value);
    }
    let Some(per_cpu) = per_cpu else { return };
    for counter in Counter::ALL {
        let name = format!("sensor_kernel_percpu_{}_total", counter.name());
        out.family(
            &name,
            Kind::Counter,
            &format!("{} Per CPU.", kernel_help(counter)),
        );
        for (cpu, values) in per_cpu.cpus().iter().enumerate() {
            out.sample(&name, &[("cpu", &cpu.to_string())], values.get(counter));
        }
    }
}

/// Campaign gauges, fed by the aggregation module through `Pipeline::campaign_gauges`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CampaignGauges {
    /// Campaigns active now.
    pub active: u64,
    /// Sources in active campaigns.
    pub sources: u64,
}

/// Events per second over a sliding window, from a running total sampled now and then.
pub struct RateWindow {
    samples: VecDeque<(Instant, u64)>,
    span: Duration,
}

impl RateWindow {
    pub fn new(span: Duration) -> Self {
        Self {
            samples: VecDeque::new(),
            span,
        }
    }

    pub fn record(&mut self, now: Instant, total: u64) {
        self.samples.push_back((now, total));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > self.span)
        {
            self.samples.pop_front();
        }
    }

    /// The rate between the oldest and the newest sample (0 before there are two).
    pub fn per_second(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                n1.saturating_sub(*n0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// A scrape: the agent's loop answers with the exposition text.
pub type ScrapeRequest = oneshot::Sender<String>;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {reason}")]
pub struct ListenError {
    pub addr: SocketAddr,
    pub reason: std::io::Error,
}

/// Binds the metrics address now, so that a taken or forbidden address stops the run before
/// anything is attached.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    let bound = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|reason| ListenError { addr, reason })?;
    TcpListener::from_std(bound).map_err(|reason| ListenError { addr, reason })
}

/// Serves until the task is aborted (or the agent's loop is gone).
pub async fn serve(listener: TcpListener, scrapes: mpsc::Sender<ScrapeRequest>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, handle(stream, scrapes)).await;
            drop(permit);
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    scrapes: mpsc::Sender<ScrapeRequest>,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            return respond(&mut stream, 400, "Bad Request", "bad request\n", true).await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return respond(&mut stream, 408, "Request Timeout", "", true).await,
    };
    let mut parts = head.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return respond(&mut stream, 400, "Bad Request", "bad request\n", true).await;
    }
    let with_body = method != Some("HEAD");
    let path = target.unwrap_or("").split('?').next().unwrap_or("");
    match (method, path) {
        (Some("GET" | "HEAD"), "/metrics") => {
            let (tx, rx) = oneshot::channel();
            if scrapes.send(tx).await.is_err() {
                return respond(
                    &mut stream,
                    503,
                    "Service Unavailable",
                    "stopping\n",
                    with_body,
                )
                .await;
            }
            match rx.await {
                Ok(text) => respond(&mut stream, 200, "OK", &text, with_body).await,
                Err(_) => {
                    respond(
                        &mut stream,
                        503,
                        "Service Unavailable",
                        "stopping\n",
                        with_body,
                    )
                    .await
                }
            }
        }
        (Some("GET" | "HEAD"), "/") => {
            respond(
                &mut stream,
                200,
                "OK",
                "sip-darknet-sensor: metrics at /metrics\n",
                with_body,
            )
            .await
        }
        (Some("GET" | "HEAD"), _) => {
            respond(&mut stream, 404, "Not Found", "not found\n", with_body).await
        }
        _ => respond(&mut stream, 405, "Method Not Allowed", "GET only\n", true).await,
    }
}

/// The request line, once the whole head has arrived; `None` if it is not a request.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n").or_else(|| find(&buf, b"\n\n")) {
            let head = &buf[..end];
            let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line).trim_end().to_string();
            return Ok(Some(line));
        }
        if buf.len() >= MAX_REQUEST {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    body: &str,
    with_body: bool,
) -> std::io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\n\
         Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    );
    if status == 405 {
        response.push_str("Allow: GET, HEAD\r\n");
    }
    response.push_str("\r\n");
    if with_body {
        response.push_str(body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_escapes_and_types() {
        let mut e = Exposition::new();
        e.family(
            "sensor_events_by_tool_total",
            Kind::Counter,
            "Events per tool.\nbackslash \\",
        );
        e.sample(
            "sensor_events_by_tool_total",
            &[("tool", "a\"b\\c\nd\x1b")],
            3u64,
        );
        e.gauge("sensor_events_per_second", "Rate.", 2.5);
        let text = e.into_text();
        assert!(
            text.contains("# HELP sensor_events_by_tool_total Events per tool.\\nbackslash \\\\\n")
        );
        assert!(text.contains("# TYPE sensor_events_by_tool_total counter\n"));
        assert!(text.contains("sensor_events_by_tool_total{tool=\"a\\\"b\\\\c\\nd\\\\x1b\"} 3\n"));
        assert!(text.contains("sensor_events_per_second 2.5\n"));
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn rate_window_spans_its_samples() {
        let mut r = RateWindow::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(r.per_second(), 0.0);
        r.record(t0, 100);
        r.record(t0 + Duration::from_secs(2), 300);
        assert_eq!(r.per_second(), 100.0);
        for s in 3..30 {
            r.record(t0 + Duration::from_secs(s), 300 + 10 * (s - 2));
        }
        assert!((r.per_second() - 10.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_the_rest() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel::<ScrapeRequest>(4);
        let server = tokio::spawn(serve(listener, tx));
        let answer = tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send("sensor_up 1\n".into());
            }
        });
        async fn ask(addr: SocketAddr, request: &str) -> String {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
        let ok = ask(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 12\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nsensor_up 1\n"), "{ok}");
        let head = ask(addr, "HEAD /metrics HTTP/1.0\r\n\r\n").await;
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        assert!(
            ask(addr, "GET /nope HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 404")
        );
        assert!(
            ask(addr, "POST /metrics HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 405")
        );
        assert!(
            ask(addr, "garbage\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 400")
        );
        server.abort();
        answer.abort();
    }
}
