//! The `COUNTER` map of a loaded test program (`xdp_count`,
//! `xdp_count_c.o`), found by the program's id: it counts every packet the
//! program ran on, whoever loaded it.
use aya::maps::{Map, MapData, MapInfo, PerCpuArray};

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
