//! Traffic continuity: three counting programs hold their slots, the first
//! of the chain (priority 0), one in the middle (priority 50) and one at
//! its end (priority 1000), while other claims churn around them, so that
//! the run order changes before, between and after the two later counters
//! (priorities 0..=100, and 1000, which runs after the last counter): up to
//! 16 claims at a time, made and released in random order by this process
//! and by slotctl processes. No claim may be refused. UDP datagrams flow over the veth pair at a fixed
//! pace the whole time. Every churning program passes packets on (xdp_pass,
//! and xdp_rewrite, which moves the packet head and back), so every packet
//! that reached the dispatcher (the first counter's count) must be counted
//! by the middle and the last counter, once, and arrive, once. Datagrams
//! the machine lost before XDP (a full queue under load) are a figure, not
//! a failure.
//!
//! 300 churn operations by default, 60 with `SLOTS_STRESS=short`,
//! 10,000 with `SLOTS_STRESS=long` (`SLOTS_STRESS_CHURN_OPS` sets it).
mod support;

use std::{
    net::UdpSocket,
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use integration_tests::env::{TestEnv, read_counter};
use slots_runtime::{Claim, OwnRelease, SlotRef};
use support::{
    OnSendError, PacedSender, Rng, check_whole, claim_args, seed, size, spawn_slotctl, stderr,
};

/// One datagram every this many microseconds.
const PACE_US: u64 = 500;
/// At most this many datagrams, whatever happens.
const MAX_PACKETS: u64 = 2_000_000;
/// Churning claims at most at once (the tail-call backend runs 33 slots).
const POOL: usize = 16;

/// A churning claim: held by this process, or persistent and made by a
/// slotctl process.
enum Churner {
    Held(Box<Claim>),
    Persistent(String),
}

fn big_receive_buffer(sock: &UdpSocket) {
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt on an open socket with an int option value.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

#[test]
fn counting_slots_see_every_packet_while_other_slots_churn() {
    let ops = size("CHURN_OPS", [60, 300, 10_000]);
    let mut rng = Rng::new(seed("churn"));
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    // Resolve the neighbour first: nothing queues behind ARP later.
    assert_eq!(env.send(3), 3);

    let mut first = env
        .in_rx(|rt, i| {
            let mut req = env.request("xdp_count", 0);
            req.name = Some("first".into());
            rt.claim(i, &req)
        })
        .unwrap();
    let mut middle = env
        .in_rx(|rt, i| rt.claim(i, &env.request("xdp_count", 50)))
        .unwrap();
    let mut end = env
        .in_rx(|rt, i| rt.claim(i, &env.request("xdp_count_c.o", 1000)))
        .unwrap();
    assert!(first.slot < middle.slot && middle.slot < end.slot);
    let base = env.pair.counters().unwrap();

    let rx = env.pair.receiver(0).unwrap();
    big_receive_buffer(&rx);
    rx.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = rx.local_addr().unwrap().port();
    let tx = env.pair.sender(port).unwrap();
    let sender = PacedSender::start(
        tx,
        Duration::from_micros(PACE_US),
        MAX_PACKETS,
        OnSendError::Fail,
        (),
    );
    // Counts arrivals by sequence number: a lost or a doubled datagram
    // shows. Reads until told to stop, which happens once every datagram
    // has been accounted for (see below), not after a silence.
    let got = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (got, stop) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = vec![0u8; MAX_PACKETS as usize];
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                match rx.recv(&mut buf) {
                    Ok(n) => {
                        assert_eq!(n, 8);
                        let seq = u64::from_be_bytes(buf[..8].try_into().unwrap()) as usize;
                        seen[seq] = seen[seq].saturating_add(1);
                        got.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => panic!("receiving: {e}"),
                }
            }
            seen.iter().filter(|&&c| c > 1).count()
        })
    };

    let started = Instant::now();
    let mut pool: Vec<Churner> = Vec::new();
    let (mut claims, mut releases, mut by_process) = (0, 0, 0);
    for op in 0..ops {
        let claim = pool.is_empty() || (pool.len() < POOL && rng.chance(55));
        let through_slotctl = rng.chance(10);
        if claim {
            let prio = if rng.chance(15) {
                1000
            } else {
                rng.below(101) as u32
            };
            let object = if rng.chance(20) {
                "xdp_rewrite"
            } else {
                "xdp_pass"
            };
            let name = format!("churn{op}");
            if through_slotctl {
                by_process += 1;
                let o = spawn_slotctl(&env, None, &claim_args(&env, object, prio, &name)).output();
                assert!(o.status.success(), "claim {op}: {}", stderr(&o));
                pool.push(Churner::Persistent(name));
                claims += 1;
                continue;
            }
            let mut req = env.request(object, prio);
            req.name = Some(name);
            match env.in_rx(|rt, i| rt.claim(i, &req)) {
                Ok(c) => {
                    pool.push(Churner::Held(Box::new(c)));
                    claims += 1;
                }
                Err(e) => panic!("claim {op}: {e}"),
            }
        } else {
            let victim = pool.swap_remove(rng.below(pool.len() as u64) as usize);
            releases += 1;
            match victim {
                Churner::Held(c) => {
                    assert_eq!(c.release().unwrap(), OwnRelease::Released);
                }
                Churner::Persistent(name) => {
                    if through_slotctl {
                        by_process += 1;
                        let args: Vec<String> = ["release", &ifc, &name]
                            .iter()
                            .map(|s| s.to_string())
                            .collect();
                        let o = spawn_slotctl(&env, None, &args).output();
                        assert!(o.status.success(), "{}", stderr(&o));
                    } else {
                        env.in_rx(|rt, i| rt.release(i, &SlotRef::Name(name), false))
                            .unwrap();
                    }
                }
            }
        }
    }
    let churn_time = started.elapsed();
    // The state after the churn is whole, and the counters still in place.
    let st = check_whole(&env, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st.claims.len(), pool.len() + 3);
    for c in pool {
        match c {
            Churner::Held(c) => {
                assert_eq!(c.release().unwrap(), OwnRelease::Released);
            }
            Churner::Persistent(name) => {
                env.in_rx(|rt, i| rt.release(i, &SlotRef::Name(name), false))
                    .unwrap();
            }
        }
    }
    let sent = sender.stop();
    // Every datagram has now met XDP or was dropped before it: the counts
    // are final, and whatever passed is in the socket or about to be.
    let reached = env.pair.accounted(base, sent).unwrap();
    let counted_first = read_counter(first.ebpf_mut());
    let counted_middle = read_counter(middle.ebpf_mut());
    let counted_end = read_counter(end.ebpf_mut());
    let settled = support::eventually(support::KERNEL_PATIENCE, || {
        let n = got.load(Ordering::Relaxed);
        if n >= counted_end {
            Ok(())
        } else {
            Err(format!("{n} of {counted_end} datagrams received"))
        }
    });
    stop.store(true, Ordering::Relaxed);
    let doubled = receiver.join().unwrap();
    let received = got.load(Ordering::Relaxed);
    println!(
        "figures: churn ops={ops} claims={claims} releases={releases} \
         through_slotctl={by_process} sent={sent} lost_before_xdp={} counted_first={counted_first} \
         counted_middle={counted_middle} counted_end={counted_end} received={received} \
         doubled={doubled} s={:.1}",
        sent - reached,
        churn_time.as_secs_f64()
    );
    assert!(sent > 0 && sent < MAX_PACKETS, "{sent} sent");
    assert!(counted_first > 0, "no packet reached the dispatcher");
    assert_eq!(
        counted_first, reached,
        "the first counter ran on every packet that reached XDP"
    );
    assert_eq!(
        counted_middle, counted_first,
        "the middle counter counted every packet once"
    );
    assert_eq!(
        counted_end, counted_first,
        "the last slot counted every packet once"
    );
    settled.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(received, counted_end, "every packet arrived");
    assert_eq!(doubled, 0, "no packet arrived twice");
}
