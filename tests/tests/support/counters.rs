//! The `COUNTER` map of a loaded test program (`xdp_count`,
//! `xdp_count_c.o`), found by the program's id: it counts every packet the
//! program ran on, whoever loaded it; and the steady traffic the suites
//! that change a running chain send through it.
use std::time::Duration;

use aya::maps::{Map, MapData, MapInfo, PerCpuArray};
use integration_tests::env::TestEnv;

use super::{KERNEL_PATIENCE, OnSendError, PacedSender, eventually};

/// Pace of the steady traffic: a datagram every this many microseconds
/// (spreads the traffic over the change; no oracle depends on it).
const PACE_US: u64 = 200;
/// At most this many datagrams, whatever happens.
const MAX_PACKETS: u64 = 1_000_000;

/// The per-CPU `COUNTER` map of the loaded program `prog`, opened so that
/// it outlives the program.
pub fn counter_map(prog: u32) -> PerCpuArray<MapData, u64> {
    let info = aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .find(|p| p.id() == prog)
        .unwrap_or_else(|| panic!("program {prog} is not loaded"));
    for id in info.map_ids().unwrap().unwrap_or_default() {
        let m = MapInfo::from_id(id).unwrap();
        if m.name_as_str() == Some("COUNTER") {
            let data = MapData::from_id(id).unwrap();
            return PerCpuArray::try_from(Map::PerCpuArray(data)).unwrap();
        }
    }
    panic!("program {prog} has no COUNTER map")
}

/// Its count, summed over CPUs.
pub fn count(map: &PerCpuArray<MapData, u64>) -> u64 {
    map.get(&0, 0).unwrap().iter().sum()
}

/// Waits until `map` has counted `n` more packets than `from`.
pub fn counted_more(map: &PerCpuArray<MapData, u64>, from: u64, n: u64) {
    eventually(KERNEL_PATIENCE, || {
        let c = count(map);
        if c >= from + n {
            Ok(())
        } else {
            Err(format!("{} of {n} packets counted", c - from))
        }
    })
    .unwrap_or_else(|e| panic!("traffic stalled: {e}"));
}

/// Steady bounded traffic through the pair into a bound receiver (so that
/// datagrams are not refused with ICMP; what arrives there is not
/// counted).
pub fn steady_traffic(env: &TestEnv) -> PacedSender {
    let rx = env.pair.receiver(0).unwrap();
    let port = rx.local_addr().unwrap().port();
    let tx = env.pair.sender(port).unwrap();
    PacedSender::start(
        tx,
        Duration::from_micros(PACE_US),
        MAX_PACKETS,
        OnSendError::Count,
        rx,
    )
}
