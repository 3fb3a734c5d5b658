/* Attached to the node side of every pod veth: the engine sees every frame a pod sends. */
#include "xsk.h"

SEC("xdp")
int sluice_pod(struct xdp_md *ctx)
{
	return sluice_to_socket(ctx, sluice_stats());
}

char LICENSE[] SEC("license") = "GPL";
