//! The end-to-end benchmark's live-frames generator (`xtask::live_frames`), checked on a real
//! veth pair: what it claims to send arrives, every frame valid, from many sources. Its rates are
//! measured by the benchmark, not here.

use std::{collections::BTreeSet, os::fd::AsRawFd as _, os::fd::FromRawFd as _, os::fd::OwnedFd};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use xtask::{bench, lab::Lab, live_frames::LiveFrames};

/// An AF_PACKET socket taking every frame that arrives on `interface` (in the calling thread's
/// namespace), with room for a burst.
fn capture_socket(interface: &str) -> OwnedFd {
    let name = std::ffi::CString::new(interface).expect("name");
    // SAFETY: valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(ifindex, 0, "no interface {interface}");
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe {
        OwnedFd::from_raw_fd(libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(protocol),
        ))
    };
    let bytes: libc::c_int = 64 << 20;
    // SAFETY: valid option pointer and length.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        );
    }
    // SAFETY: a zeroed sockaddr_ll with the fields bind needs.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: valid address and length.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(bound, 0, "{}", std::io::Error::last_os_error());
    fd
}

/// Frames waiting on `socket`, without blocking.
fn take_frames(socket: &OwnedFd) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut buffer = vec![0u8; 4096];
    loop {
        // SAFETY: a valid buffer of its length.
        let n = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            return frames;
        }
        frames.push(buffer[..n as usize].to_vec());
    }
}

#[test]
fn live_frames_arrive_valid_and_from_many_sources() {
    const FRAMES: u64 = 3_000;
    let lab = Lab::create("gen").expect("lab");
    lab.take_redirected_frames()
        .expect("GRO on at the darknet end");
    let socket = {
        let _ns = lab.enter_dark().expect("enter the darknet namespace");
        capture_socket(&lab.dark_if)
    };
    let frame = bench::live_frame(&lab).expect("frame");
    let report = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let _ns = lab.enter_scan().expect("enter the scanner namespace");
                LiveFrames::new(&lab.scan_ns, &lab.scan_if, frame.clone())
                    .expect("load the generator")
                    .send(FRAMES, 50_000)
                    .expect("send")
            })
            .join()
            .expect("generator thread")
    });
    assert_eq!(report.sent, FRAMES);
    // The receive side ran in the generator's softirq, so veth could queue every frame.
    assert_eq!(report.refused, 0);

    let frames: Vec<Vec<u8>> = take_frames(&socket)
        .into_iter()
        .filter(|f| f.len() == frame.len())
        .collect();
    assert_eq!(frames.len() as u64, FRAMES, "every frame arrived");
    let (mut sources, mut destinations) = (BTreeSet::new(), BTreeSet::new());
    for bytes in &frames {
        let packet = SlicedPacket::from_ethernet(bytes).expect("a frame etherparse reads");
        let Some(NetSlice::Ipv4(ip)) = &packet.net else {
            panic!("not IPv4");
        };
        let header = ip.header().to_header();
        assert_eq!(
            header.header_checksum,
            header.calc_header_checksum(),
            "IPv4 header checksum"
        );
        let Some(TransportSlice::Udp(udp)) = &packet.transport else {
            panic!("not UDP");
        };
        assert_eq!(udp.destination_port(), 5060);
        let want = udp
            .to_header()
            .calc_checksum_ipv4(&header, udp.payload())
            .expect("UDP checksum");
        assert_eq!(udp.checksum(), want, "UDP checksum");
        // Everything but the two addresses' last bytes is the frame as built.
        let (src, dst) = (header.source, header.destination);
        assert_eq!(u16::from(src[3]) + u16::from(dst[3]), 252);
        assert_eq!(&bytes[..29], &frame[..29]);
        assert_eq!(&bytes[30..33], &frame[30..33]);
        assert_eq!(&bytes[34..], &frame[34..]);
        sources.insert(src);
        destinations.insert(dst);
    }
    println!(
        "live frames: {} frames, {} sources, {} destinations",
        frames.len(),
        sources.len(),
        destinations.len()
    );
    assert!(sources.len() > 200, "{} sources", sources.len());
    assert_eq!(sources.len(), destinations.len());
}
