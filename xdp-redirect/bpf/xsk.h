/* Shared by the pod and uplink programs: the AF_XDP socket map, the per-CPU stats entry,
 * and the one place a frame is handed to a socket. */
#ifndef SLUICE_XSK_H
#define SLUICE_XSK_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "sluice_maps.h"

/* rx queue index -> AF_XDP socket bound to that queue of this interface. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, SLUICE_XSK_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sluice_xdp_stats);
} xdp_stats SEC(".maps");

static __always_inline struct sluice_xdp_stats *sluice_stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&xdp_stats, &zero);
}

/* Redirects to the socket of the frame's rx queue; without one, the kernel gets the frame. */
static __always_inline int sluice_to_socket(struct xdp_md *ctx, struct sluice_xdp_stats *st)
{
	long verdict = bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);

	if (st) {
		if (verdict == XDP_REDIRECT)
			st->redirected++;
		else
			st->no_socket++;
	}
	return (int)verdict;
}

#endif /* SLUICE_XSK_H */
