//! Shared bits of the test programs.
#![no_std]

use aya_ebpf::programs::XdpContext;

/// Bytes of Ethernet + IPv4 + UDP headers.
const ETH_IP_UDP: usize = 14 + 20 + 8;

/// True when the frame is an IPv4/UDP packet (no IP options) that fits in the
/// linear data. Test traffic is UDP; the kernel's own chatter on a fresh veth
/// (IPv6 neighbour discovery) is not.
#[inline(always)]
pub fn is_ipv4_udp(ctx: &XdpContext) -> bool {
    let data = ctx.data();
    if data + ETH_IP_UDP > ctx.data_end() {
        return false;
    }
    // SAFETY: bounds checked above.
    unsafe {
        let eth_type = *((data + 12) as *const u16);
        let ver_ihl = *((data + 14) as *const u8);
        let proto = *((data + 14 + 9) as *const u8);
        eth_type == 0x0008u16 && ver_ihl == 0x45 && proto == 17
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
