/* Attached to the node's uplink: frames for engine-owned destinations go to the engine, the
 * node's own traffic stays with the kernel. */
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include "xsk.h"

/* Engine-owned prefixes (DEST_ENGINE) and node addresses (DEST_NODE); IPv4 is IPv4-mapped. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SLUICE_DEST_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sluice_lpm_key);
	__type(value, struct sluice_dest);
} engine_dests SEC(".maps");

/* (protocol, destination port) the engine owns on DEST_NODE addresses. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SLUICE_PORT_MAX_ENTRIES);
	__type(key, struct sluice_port_key);
	__type(value, struct sluice_port_entry);
} engine_ports SEC(".maps");

/* Entry 0: the masquerade port range (replies to masqueraded pod traffic). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sluice_port_range);
} engine_port_range SEC(".maps");

/* Whether a (host order) port or echo identifier is in the masquerade range. */
static __always_inline int in_masquerade_range(__u16 port)
{
	__u32 zero = 0;
	struct sluice_port_range *range = bpf_map_lookup_elem(&engine_port_range, &zero);

	return range && range->enabled && port >= range->min && port <= range->max;
}

#define ICMP_ECHOREPLY_TYPE 0
#define ICMPV6_ECHOREPLY_TYPE 129

struct vlan_tag {
	__be16 tci;
	__be16 encapsulated_proto;
};

#define IPV4_FRAG_OFFSET_MASK 0x1fff

SEC("xdp")
int sluice_uplink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct sluice_xdp_stats *st = sluice_stats();
	struct sluice_lpm_key key = {};
	struct sluice_port_key port_key = {};
	struct sluice_dest *dest;
	struct ethhdr *eth = data;
	void *l3, *l4 = NULL;
	__be16 h_proto;
	__u8 l4_proto = 0;

	if ((void *)(eth + 1) > data_end)
		goto non_ip;
	h_proto = eth->h_proto;
	l3 = eth + 1;
	if (h_proto == bpf_htons(ETH_P_8021Q) || h_proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_tag *tag = l3;

		if ((void *)(tag + 1) > data_end)
			goto non_ip;
		h_proto = tag->encapsulated_proto;
		l3 = tag + 1;
	}

	if (h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
			goto non_ip;
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], &ip->daddr, 4);
		l4_proto = ip->protocol;
		/* Only a first fragment carries the L4 header. */
		if ((ip->frag_off & bpf_htons(IPV4_FRAG_OFFSET_MASK)) == 0)
			l4 = (void *)ip + ip->ihl * 4;
	} else if (h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			goto non_ip;
		__builtin_memcpy(key.addr, &ip6->daddr, 16);
		/* Extension headers are not walked: port entries match only when the L4 header
		 * follows the fixed header. */
		l4_proto = ip6->nexthdr;
		l4 = ip6 + 1;
	} else {
		goto non_ip;
	}
	key.prefixlen = 128;

	dest = bpf_map_lookup_elem(&engine_dests, &key);
	if (!dest)
		goto not_engine;
	if (dest->kind == SLUICE_DEST_ENGINE)
		return sluice_to_socket(ctx, st);
	if (dest->kind == SLUICE_DEST_NODE && l4 &&
	    (l4_proto == IPPROTO_TCP || l4_proto == IPPROTO_UDP || l4_proto == IPPROTO_SCTP)) {
		/* TCP, UDP and SCTP all start with source port, destination port. */
		__be16 *ports = l4;

		if ((void *)(ports + 2) > data_end)
			goto not_engine;
		port_key.proto = l4_proto;
		port_key.port_be = ports[1];
		if (bpf_map_lookup_elem(&engine_ports, &port_key))
			return sluice_to_socket(ctx, st);
		if (l4_proto != IPPROTO_SCTP && in_masquerade_range(bpf_ntohs(ports[1])))
			return sluice_to_socket(ctx, st);
	}
	if (dest->kind == SLUICE_DEST_NODE && l4 &&
	    (l4_proto == IPPROTO_ICMP || l4_proto == IPPROTO_ICMPV6)) {
		/* type, code, checksum, identifier: an echo reply to a masqueraded ping. */
		__u8 *icmp = l4;
		__be16 *ident = l4 + 4;

		if ((void *)(ident + 1) > data_end)
			goto not_engine;
		if (((l4_proto == IPPROTO_ICMP && icmp[0] == ICMP_ECHOREPLY_TYPE) ||
		     (l4_proto == IPPROTO_ICMPV6 && icmp[0] == ICMPV6_ECHOREPLY_TYPE)) &&
		    in_masquerade_range(bpf_ntohs(*ident)))
			return sluice_to_socket(ctx, st);
	}

not_engine:
	if (st)
		st->not_engine++;
	return XDP_PASS;
non_ip:
	if (st)
		st->non_ip++;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
