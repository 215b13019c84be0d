//! Real senders for the lab: kernel sockets in the scanner namespace.

use std::{
    io,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::lab::{self, Lab};

/// A well-formed SIP request as a softphone would send it (no scanner quirks).
pub fn sip_request(method: &str, target: IpAddr, from: IpAddr, sport: u16, seq: u32) -> Vec<u8> {
    let host = match target {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let local = match from {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let (uri, body) = match method {
        "REGISTER" => (format!("sip:{host}"), String::new()),
        _ => (format!("sip:100@{host}"), String::new()),
    };
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local}:{sport};branch=z9hG4bK-lab{seq:08x};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:lab@{local}>;tag=lab{seq}\r\n\
         To: <sip:100@{host}>\r\n\
         Call-ID: lab-{seq}@{local}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:lab@{local}:{sport}>\r\n\
         User-Agent: sensor-lab\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn check_target(addr: &SocketAddr) -> Result<()> {
    if !lab::is_lab_address(addr.ip()) {
        bail!("refusing to send to {addr}: not a documentation-range or loopback address");
    }
    Ok(())
}

/// Sends `count` SIP OPTIONS over UDP from the scanner namespace, one datagram each, pacing so
/// that a veth queue never overflows (the test is about the sensor, not the sender).
pub fn udp_sip_burst(lab: &Lab, target: SocketAddr, count: u32) -> Result<u32> {
    check_target(&target)?;
    let _ns = lab.enter_scan()?;
    let bind: SocketAddr = match target {
        SocketAddr::V4(_) => "0.0.0.0:0".parse()?,
        SocketAddr::V6(_) => "[::]:0".parse()?,
    };
    let socket = UdpSocket::bind(bind).context("bind UDP socket in scanner namespace")?;
    let from = socket.local_addr()?;
    for seq in 0..count {
        let payload = sip_request("OPTIONS", target.ip(), from.ip(), from.port(), seq);
        send_paced(&socket, &payload, target, seq)?;
    }
    Ok(count)
}

/// Sends `per_source` SIP OPTIONS over UDP from each of `sources` (addresses of the scanner's
/// interface, see [`Lab::add_scan_address`]), each from its own socket on port 5060, taking the
/// sources in turn: their records reach the sensor interleaved.
pub fn udp_sip_from_sources(
    lab: &Lab,
    target: SocketAddr,
    sources: &[IpAddr],
    per_source: u32,
) -> Result<u32> {
    check_target(&target)?;
    let _ns = lab.enter_scan()?;
    let sockets = sources
        .iter()
        .map(|&ip| {
            UdpSocket::bind(SocketAddr::new(ip, 5060))
                .with_context(|| format!("bind {ip}:5060 in scanner namespace"))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut sent = 0;
    for seq in 0..per_source {
        for socket in &sockets {
            let from = socket.local_addr()?;
            let payload = sip_request("OPTIONS", target.ip(), from.ip(), from.port(), seq);
            send_paced(socket, &payload, target, sent)?;
            sent += 1;
        }
    }
    Ok(sent)
}

/// Sends one datagram, waiting while the qdisc is full rather than losing it, and pausing after
/// every 256th (`n`: datagrams sent before this one).
fn send_paced(socket: &UdpSocket, payload: &[u8], target: SocketAddr, n: u32) -> Result<()> {
    loop {
        match socket.send_to(payload, target) {
            Ok(_) => break,
            // ENOBUFS: the qdisc is full; give it a moment rather than lose the packet.
            Err(e)
                if e.raw_os_error() == Some(libc::ENOBUFS)
                    || e.kind() == io::ErrorKind::WouldBlock =>
            {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => return Err(e).with_context(|| format!("send to {target}")),
        }
    }
    if n % 256 == 255 {
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// What the demonstration mix sent.
#[derive(Debug, Default)]
pub struct DemoMix {
    pub sip_udp: u32,
    pub tcp_syns: u32,
    pub noise: u32,
}

/// The lab's demonstration: SIP OPTIONS, REGISTER and INVITE over UDP (IPv4 and IPv6), a TCP
/// connection attempt to 5060 (its SYN), and non-SIP noise (DNS-like UDP, TCP to 80, a binary
/// datagram to 5060).
pub fn demo_mix(lab: &Lab) -> Result<DemoMix> {
    let _ns = lab.enter_scan()?;
    let mut mix = DemoMix::default();
    let v4 = IpAddr::V4(lab::darknet_v4(10));
    let v6 = IpAddr::V6(lab::darknet_v6(0x10));
    for (target, bind) in [(v4, "0.0.0.0:5060"), (v6, "[::]:5060")] {
        let socket = UdpSocket::bind(bind).context("bind 5060 in scanner namespace")?;
        let from = socket.local_addr()?;
        for (i, method) in ["OPTIONS", "REGISTER", "INVITE"].iter().enumerate() {
            let to = SocketAddr::new(target, 5060);
            check_target(&to)?;
            socket.send_to(
                &sip_request(method, target, from.ip(), from.port(), i as u32),
                to,
            )?;
            mix.sip_udp += 1;
        }
        // Noise: a DNS-looking query to 53 and binary bytes to 5060.
        let dns = SocketAddr::new(target, 53);
        check_target(&dns)?;
        socket.send_to(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", dns)?;
        socket.send_to(
            b"\x00\x01\x02\x1b[2J\xff\xfe",
            SocketAddr::new(target, 5060),
        )?;
        mix.noise += 2;
    }
    for port in [5060u16, 80] {
        let to = SocketAddr::new(v4, port);
        check_target(&to)?;
        // Nothing answers at a darknet: the connect times out after its SYN.
        let _ = TcpStream::connect_timeout(&to, Duration::from_millis(300));
        if port == 5060 {
            mix.tcp_syns += 1;
        } else {
            mix.noise += 1;
        }
    }
    Ok(mix)
}
