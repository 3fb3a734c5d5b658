/* Benchmark helper: counts and drops every frame. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "sluice_maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sluice_sink_counts);
} sink_counts SEC(".maps");

SEC("xdp")
int sluice_sink(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct sluice_sink_counts *c = bpf_map_lookup_elem(&sink_counts, &zero);

	if (c) {
		c->packets++;
		c->bytes += ctx->data_end - ctx->data;
	}
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
