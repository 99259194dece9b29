// Reads packet data without a bounds check: the verifier must reject it.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_unchecked(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	return data[100] == 1 ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
