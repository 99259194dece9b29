// A valid BPF object with programs of other types only: a tc classifier
// and a tracing program.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int tc_pass(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

SEC("tp_btf/xdp_exception")
int trace_exception(unsigned long long *ctx)
{
	return 0;
}

char _license[] SEC("license") = "GPL";
