// A valid BPF object with no XDP program in it (a kprobe).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("kprobe/do_nanosleep")
int on_nanosleep(void *ctx)
{
	return 0;
}

char _license[] SEC("license") = "GPL";
