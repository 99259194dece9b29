// An XDP program with libxdp-style run config: priority 30, chain on PASS
// and DROP. Used to check that the runtime reads XDP_RUN_CONFIG.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "run_config.h"

struct {
	__uint(priority, 30);
	__uint(XDP_PASS, 1);
	__uint(XDP_DROP, 1);
} XDP_RUN_CONFIG(xdp_pass_cfg);

SEC("xdp")
int xdp_pass_cfg(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
