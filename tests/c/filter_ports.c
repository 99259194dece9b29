// Drops UDP datagrams to the destination ports marked in filter_ports, as
// xdp-filter does, and passes everything else. The map is pinned by name
// (LIBBPF_PIN_BY_NAME): every loader that honours it reuses one pin.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} filter_ports SEC(".maps");

SEC("xdp")
int xdp_filter_ports(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)(ip + 1);
	__u32 port;
	__u32 *drop;

	if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	port = bpf_ntohs(udp->dest);
	drop = bpf_map_lookup_elem(&filter_ports, &port);
	if (drop && *drop)
		return XDP_DROP;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
