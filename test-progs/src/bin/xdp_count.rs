//! Counts IPv4/UDP packets in the per-CPU `COUNTER[0]` and passes everything.
// no_std and no_main for BPF; on the host (`cargo clippy --workspace`
// builds every member) an empty program, so the workspace checks whole.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use test_progs::is_ipv4_udp;

#[map]
static COUNTER: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn xdp_count(ctx: XdpContext) -> u32 {
    if is_ipv4_udp(&ctx)
        && let Some(c) = COUNTER.get_ptr_mut(0)
    {
        // SAFETY: this CPU's map value, valid for this program run.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_PASS
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
