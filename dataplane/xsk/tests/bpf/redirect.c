// Test-only XDP program: every frame goes to the AF_XDP socket stored under the
// receiving interface's ifindex, or up the stack if there is none.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} XSKS SEC(".maps");

SEC("xdp")
int redirect(struct xdp_md *ctx)
{
	return bpf_redirect_map(&XSKS, ctx->ingress_ifindex, XDP_PASS);
}

char LICENSE[] SEC("license") = "GPL";
