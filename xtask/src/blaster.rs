//! A traffic generator for the end-to-end benchmark: prebuilt frames written straight to a
//! device with AF_PACKET, PACKET_QDISC_BYPASS and sendmmsg, paced to a target rate.
//!
//! Frames bypass the sender's IP stack and qdisc, so the offered rate is limited by the device and
//! the receiver, not by socket layers; every frame handed to the device is counted as sent.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

const PACKET_QDISC_BYPASS: libc::c_int = 20;
const BATCH: usize = 64;

pub struct Blaster {
    fd: OwnedFd,
    ifindex: i32,
    frames: Vec<Vec<u8>>,
}

/// What a paced send achieved.
#[derive(Clone, Copy, Debug)]
pub struct SendReport {
    /// Frames put out to the device.
    pub sent: u64,
    /// Of them, frames the device could not take (the live generator: veth's ring at the
    /// receiving end was full). Lost before any consumer, as a NIC drops what its ring cannot
    /// hold; also in the receiving end's rx_dropped.
    pub refused: u64,
    pub elapsed: Duration,
}

impl SendReport {
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64()
    }
}

impl Blaster {
    /// Opens a raw socket on `interface` in the calling thread's network namespace.
    pub fn new(interface: &str, frames: Vec<Vec<u8>>) -> Result<Self> {
        if frames.is_empty() {
            bail!("no frames to send");
        }
        let name = std::ffi::CString::new(interface)?;
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if ifindex == 0 {
            bail!("no interface {interface} in this namespace");
        }
        // SAFETY: plain socket(2); protocol 0 means the socket receives nothing.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("AF_PACKET socket");
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // SAFETY: valid option pointer and length.
        let ret = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if ret != 0 {
            return Err(io::Error::last_os_error()).context("PACKET_QDISC_BYPASS");
        }
        Ok(Self {
            fd,
            ifindex,
            frames,
        })
    }

    /// Sends `total` frames (cycling through the prebuilt ones) at `rate` frames per second
    /// (0: as fast as possible).
    pub fn send(&self, total: u64, rate: u64) -> Result<SendReport> {
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(BATCH);
        let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(BATCH);
        let start = Instant::now();
        let mut sent: u64 = 0;
        let mut next_frame = 0usize;
        while sent < total {
            let n = BATCH.min((total - sent) as usize);
            iovecs.clear();
            headers.clear();
            for _ in 0..n {
                let frame = &self.frames[next_frame % self.frames.len()];
                next_frame += 1;
                iovecs.push(libc::iovec {
                    iov_base: frame.as_ptr() as *mut libc::c_void,
                    iov_len: frame.len(),
                });
            }
            for iov in iovecs.iter_mut() {
                // SAFETY: zeroed msghdr is valid; pointers stay alive for the call.
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                msg.msg_name = (&mut addr as *mut libc::sockaddr_ll).cast();
                msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                msg.msg_iov = iov;
                msg.msg_iovlen = 1;
                headers.push(libc::mmsghdr {
                    msg_hdr: msg,
                    msg_len: 0,
                });
            }
            let mut done = 0usize;
            while done < n {
                // SAFETY: headers[done..n] are valid mmsghdr entries.
                let ret = unsafe {
                    libc::sendmmsg(
                        self.fd.as_raw_fd(),
                        headers[done..].as_mut_ptr(),
                        (n - done) as u32,
                        0,
                    )
                };
                if ret < 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::ENOBUFS)
                        || e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted
                    {
                        std::thread::yield_now();
                        continue;
                    }
                    return Err(e).context("sendmmsg");
                }
                done += ret as usize;
            }
            sent += n as u64;
            if rate > 0 {
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                loop {
                    let now = start.elapsed();
                    if now >= due {
                        break;
                    }
                    let left = due - now;
                    if left > Duration::from_micros(200) {
                        std::thread::sleep(left - Duration::from_micros(100));
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        Ok(SendReport {
            sent,
            refused: 0,
            elapsed: start.elapsed(),
        })
    }
}
