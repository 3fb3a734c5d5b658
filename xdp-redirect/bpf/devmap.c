/* Benchmark helpers for the in-kernel XDP ceiling: every frame on one interface is sent out
 * of another through a DEVMAP, and a do-nothing program for the receiving veth's peer
 * (veth drops XDP-redirected frames unless its peer runs XDP or has GRO on). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Entry 0: the interface frames are sent out of. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} redirect_devs SEC(".maps");

SEC("xdp")
int sluice_devmap(struct xdp_md *ctx)
{
	return (int)bpf_redirect_map(&redirect_devs, 0, XDP_DROP);
}

SEC("xdp")
int sluice_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
