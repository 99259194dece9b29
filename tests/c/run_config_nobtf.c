// XDP_RUN_CONFIG metadata in an object built without -g: the values live
// only in BTF, which this object does not have (build.rs builds files
// ending in _nobtf.c without -g).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "run_config.h"

struct {
	__uint(priority, 10);
	__uint(XDP_PASS, 1);
	__uint(XDP_DROP, 1);
} XDP_RUN_CONFIG(xdp_cfg_nobtf);

SEC("xdp")
int xdp_cfg_nobtf(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
