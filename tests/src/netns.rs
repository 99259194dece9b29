//! Network namespaces and veth pairs made by the tests, removed on drop.
//!
//! Everything a test touches lives in namespaces it created: the host's
//! interfaces, routes and firewall are never changed. Switching namespace is
//! per thread (`setns`), so tests can run in parallel, and bpffs stays the
//! host's (an `ip netns exec` child would get a fresh /sys without it).
use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call, fit for an interface
/// (at most 15 bytes).
pub fn unique(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 1_000_000)
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Self> {
        let name = unique(prefix);
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs a command inside the namespace (with `ip netns exec`).
    pub fn exec(&self, cmd: &[&str]) -> Result<()> {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(cmd);
        ip(&args)
    }

    /// Path of the namespace file (for `setns` and `nsenter --net=`).
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Moves the calling thread into the namespace until the guard drops.
    pub fn enter(&self) -> Result<NetnsGuard> {
        let back = File::open("/proc/thread-self/ns/net").context("opening own netns")?;
        let target = File::open(self.path()).with_context(|| format!("opening {}", self.path()))?;
        setns(&target)?;
        Ok(NetnsGuard { back })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn setns(ns: &File) -> Result<()> {
    // SAFETY: setns on a valid namespace fd; affects only this thread.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Returns the thread to the namespace it came from.
pub struct NetnsGuard {
    back: File,
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        setns(&self.back).expect("returning to the original network namespace");
    }
}

/// Two namespaces joined by a veth pair: `tx` (10.x.y.1) sends, `rx`
/// (10.x.y.2) receives, and the dispatcher goes on `rx`'s end.
/// Addresses are private to the two namespaces.
pub struct VethPair {
    pub tx: Netns,
    pub rx: Netns,
    pub tx_if: String,
    pub rx_if: String,
    pub tx_addr: Ipv4Addr,
    pub rx_addr: Ipv4Addr,
}

impl VethPair {
    pub fn new() -> Result<Self> {
        let tx = Netns::new("st")?;
        let rx = Netns::new("sr")?;
        let tx_if = unique("vt");
        let rx_if = unique("vr");
        // A /30 per pair, derived from the (unique) namespace counter; it only
        // exists inside the two namespaces, so pairs never collide anyway.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (b, c) = (((n >> 6) & 0xff) as u8, ((n & 0x3f) << 2) as u8);
        let tx_addr = Ipv4Addr::new(10, 213, b, c + 1);
        let rx_addr = Ipv4Addr::new(10, 213, b, c + 2);
        tx.exec(&[
            "ip", "link", "add", &tx_if, "type", "veth", "peer", "name", &rx_if,
        ])?;
        tx.exec(&["ip", "link", "set", &rx_if, "netns", &rx.name])?;
        tx.exec(&["ip", "addr", "add", &format!("{tx_addr}/30"), "dev", &tx_if])?;
        rx.exec(&["ip", "addr", "add", &format!("{rx_addr}/30"), "dev", &rx_if])?;
        tx.exec(&["ip", "link", "set", &tx_if, "up"])?;
        rx.exec(&["ip", "link", "set", &rx_if, "up"])?;
        // Native XDP on veth needs the peer to have an XDP program or GRO;
        // a static neighbour entry saves an ARP round trip per test.
        Ok(Self {
            tx,
            rx,
            tx_if,
            rx_if,
            tx_addr,
            rx_addr,
        })
    }

    /// Opens a UDP socket in `rx` bound to `port` (0: any free port; the
    /// socket stays in `rx`).
    pub fn receiver(&self, port: u16) -> Result<UdpSocket> {
        let _in = self.rx.enter()?;
        let sock = UdpSocket::bind(SocketAddrV4::new(self.rx_addr, port))?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(sock)
    }

    /// Opens a UDP socket in `tx`, connected to `rx_addr:port`.
    pub fn sender(&self, port: u16) -> Result<UdpSocket> {
        let _in = self.tx.enter()?;
        let sock = UdpSocket::bind(SocketAddrV4::new(self.tx_addr, 0))?;
        sock.connect(SocketAddrV4::new(self.rx_addr, port))?;
        Ok(sock)
    }

    /// Sends `count` datagrams from `tx` to `rx:port` and returns how many
    /// arrived at the receiving socket. Bounded: at most `count` packets and
    /// a short wait for the last ones.
    /// `port` 0 picks a free port for this call alone.
    pub fn send_and_count(&self, port: u16, count: usize) -> Result<usize> {
        let rx = self.receiver(port)?;
        let tx = self.sender(rx.local_addr()?.port())?;
        for i in 0..count {
            tx.send(&(i as u32).to_be_bytes())?;
        }
        let mut got = 0;
        let mut buf = [0u8; 64];
        // A loaded machine (parallel tests, emulation) may take a while for
        // the first datagram (ARP); after that, 200 ms of silence ends it.
        rx.set_read_timeout(Some(Duration::from_millis(1000)))?;
        while got < count {
            match rx.recv(&mut buf) {
                Ok(_) => {
                    got += 1;
                    if got == 1 {
                        rx.set_read_timeout(Some(Duration::from_millis(200)))?;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(got)
    }
}
