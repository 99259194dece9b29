// One object per feature, as projects ship them: an XDP program beside a
// tc program and two tracing programs (one with a CO-RE relocation), a
// .text function, a map the XDP program shares with tc, and a map only tc
// uses whose size its loader sets at start (max_entries 0). A claim loads
// the XDP program and what it uses, nothing else.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} shared_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
} tc_only_cnt SEC(".maps");

// In .text: a BPF-to-BPF call, and the only reference to shared_hits on
// the XDP side.
static __attribute__((noinline)) int count_udp(void *data, void *end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	__u32 key = 0;
	__u64 *n;

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->protocol != IPPROTO_UDP)
		return 0;
	n = bpf_map_lookup_elem(&shared_hits, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
	return 1;
}

// Drops IPv4/UDP, passes the rest.
SEC("xdp")
int xdp_mixed(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	return count_udp(data, end) ? XDP_DROP : XDP_PASS;
}

SEC("tc")
int tc_mixed(struct __sk_buff *skb)
{
	__u32 key = 0;
	__u64 *n = bpf_map_lookup_elem(&tc_only_cnt, &key);

	if (n)
		*n += 1;
	n = bpf_map_lookup_elem(&shared_hits, &key);
	if (n)
		*n += 1;
	return TC_ACT_OK;
}

struct task_struct {
	int pid;
} __attribute__((preserve_access_index));

SEC("kprobe/do_nanosleep")
int kprobe_mixed(void *ctx)
{
	struct task_struct *t = (void *)bpf_get_current_task();
	int pid = 0;

	bpf_probe_read_kernel(&pid, sizeof(pid), &t->pid);
	return pid == 0;
}

SEC("tp_btf/xdp_exception")
int trace_mixed(unsigned long long *ctx)
{
	return 0;
}

char _license[] SEC("license") = "GPL";
