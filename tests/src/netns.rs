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
    ip_output(args).map(drop)
}

fn ip_output(args: &[&str]) -> Result<String> {
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
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An interface's record in `ip -j -s link show` (the first of the list).
fn link_json(ns: &Netns, ifname: &str) -> Result<serde_json::Value> {
    let out = ip_output(&["-n", &ns.name, "-j", "-s", "link", "show", "dev", ifname])?;
    let mut v: serde_json::Value = serde_json::from_str(&out).context("ip -j output")?;
    Ok(v[0].take())
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

/// Rounds of sending again what was lost before the receiving end.
const ROUNDS: usize = 10;
/// How long a round waits for the receiving end to account for what was
/// sent (a few microseconds normally; only a broken pair waits this long).
const PATIENCE: Duration = Duration::from_secs(60);

/// What [`VethPair::send`] delivered.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// Datagrams that reached the receiving end (each exactly once).
    pub reached: usize,
    /// Datagrams lost before the receiving end, sent again.
    pub resent: usize,
    /// Datagrams that arrived at the socket.
    pub arrived: usize,
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
        // Only the test's datagrams cross the pair, so that the receiving
        // end's packet counter counts exactly them: no IPv6 (router
        // solicitations, DAD, MLD) and no ARP (a static neighbour entry;
        // an XDP program that drops would also drop ARP).
        for (ns, ifname) in [(&tx, &tx_if), (&rx, &rx_if)] {
            let _in = ns.enter()?;
            let knob = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
            if std::path::Path::new(&knob).exists() {
                std::fs::write(&knob, "1").with_context(|| format!("writing {knob}"))?;
            }
        }
        let rx_mac = link_json(&rx, &rx_if)?["address"]
            .as_str()
            .context("no address in ip -j link")?
            .to_string();
        let rx_ip = rx_addr.to_string();
        tx.exec(&[
            "ip",
            "neigh",
            "replace",
            &rx_ip,
            "lladdr",
            &rx_mac,
            "dev",
            &tx_if,
            "nud",
            "permanent",
        ])?;
        tx.exec(&["ip", "link", "set", &tx_if, "up"])?;
        rx.exec(&["ip", "link", "set", &rx_if, "up"])?;
        Ok(Self {
            tx,
            rx,
            tx_if,
            rx_if,
            tx_addr,
            rx_addr,
        })
    }

    /// Frames that have reached the receiving end (on veth with native XDP:
    /// that went through its XDP program, dropped or not), and frames the
    /// sending end dropped before they could.
    pub fn counters(&self) -> Result<(u64, u64)> {
        let rx = link_json(&self.rx, &self.rx_if)?;
        let tx = link_json(&self.tx, &self.tx_if)?;
        let reached = rx["stats64"]["rx"]["packets"]
            .as_u64()
            .context("rx packets")?;
        let lost = tx["stats64"]["tx"]["dropped"]
            .as_u64()
            .context("tx dropped")?;
        Ok((reached, lost))
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
    /// Lost datagrams are reported on stderr (shown with the test's output).
    pub fn send_and_count(&self, port: u16, count: usize) -> Result<usize> {
        let d = self.send(port, count)?;
        if d.resent > 0 {
            eprintln!(
                "figures: send lost_before_xdp={} resent, {} reached XDP",
                d.resent, d.reached
            );
        }
        Ok(d.arrived)
    }

    /// Waits until the `sent` frames sent since the counters were `base`
    /// have all reached the receiving end or been dropped before it;
    /// returns how many reached it.
    pub fn accounted(&self, base: (u64, u64), sent: u64) -> Result<u64> {
        let start = std::time::Instant::now();
        loop {
            let (r, l) = self.counters()?;
            let (reached, lost) = (r - base.0, l - base.1);
            if reached + lost >= sent {
                return Ok(reached);
            }
            if start.elapsed() > PATIENCE {
                bail!(
                    "{sent} frames sent, {reached} reached {} and {lost} were dropped on the way after {PATIENCE:?}",
                    self.rx_if
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends `count` UDP datagrams from `tx` to `rx` on `port` (0: a free
    /// one) and counts those that arrive. Datagrams the machine loses
    /// before they reach the receiving end (a full queue under load) are
    /// sent again, so that `count` of them meet its XDP program; they are
    /// reported in [`Delivery::resent`], not counted as lost.
    ///
    /// No timing decides the result: reading stops once the receiving end
    /// has taken in all `count` datagrams (its packet counter says so) and
    /// either all have arrived or none came for a while after that; an
    /// XDP verdict is final by then.
    pub fn send(&self, port: u16, count: usize) -> Result<Delivery> {
        let rx = self.receiver(port)?;
        let tx = self.sender(rx.local_addr()?.port())?;
        let (reached0, lost0) = self.counters()?;
        let (mut sent, mut reached) = (0u64, 0u64);
        for _ in 0..ROUNDS {
            let want = count as u64 - reached;
            if want == 0 {
                break;
            }
            for _ in 0..want {
                tx.send(&(sent as u32).to_be_bytes())?;
                sent += 1;
            }
            reached = self.accounted((reached0, lost0), sent)?;
        }
        if reached < count as u64 {
            bail!(
                "only {reached} of {count} datagrams reached {} in {ROUNDS} rounds",
                self.rx_if
            );
        }
        let mut got = 0;
        let mut buf = [0u8; 64];
        rx.set_read_timeout(Some(Duration::from_millis(200)))?;
        while got < count {
            match rx.recv(&mut buf) {
                Ok(_) => got += 1,
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
        Ok(Delivery {
            reached: count,
            resent: (sent - count as u64) as usize,
            arrived: got,
        })
    }
}
