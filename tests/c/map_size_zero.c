// Maps sized by their loader at start (max_entries 0), as xdp-bench's:
// rx_cnt is used by the XDP program, redir_err_cnt only by a tracing
// program. The XDP program drops IPv4/UDP once rx_cnt has an entry 0,
// that is once the map was given a size.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
} rx_cnt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
} redir_err_cnt SEC(".maps");

SEC("xdp")
int xdp_sized(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	__u32 key = 0;
	__u64 *n;

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	n = bpf_map_lookup_elem(&rx_cnt, &key);
	if (!n)
		return XDP_PASS;
	*n += 1;
	return XDP_DROP;
}

SEC("tp_btf/xdp_redirect_err")
int trace_redirect_err(unsigned long long *ctx)
{
	__u32 key = 0;
	__u64 *n = bpf_map_lookup_elem(&redir_err_cnt, &key);

	if (n)
		*n += 1;
	return 0;
}

char _license[] SEC("license") = "GPL";
