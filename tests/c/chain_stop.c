// A replacement chain decision: never go on, so the first filled slot's
// verdict is final whatever its proceed-on mask says.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("freplace/chain_decide")
int chain_stop(struct xdp_md *ctx, __u32 slot, __u32 action)
{
	if (!ctx)
		return 0;
	return 0 * (slot + action);
}

char _license[] SEC("license") = "GPL";
