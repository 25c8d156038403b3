// SPDX-License-Identifier: MIT
//
// stunnerd's kernel fast path for TURN-UDP ChannelData (admin.offload_engine).
//
// Two directions, each one hash lookup after one lookup in `addrs`:
//
//   client -> listener, ChannelData  ==>  relay -> peer, the 4-byte header stripped
//   peer -> relay, any UDP           ==>  listener -> client, a ChannelData header prepended
//
// User space (src/turn) decides which (client, channel) and (peer, relay) pairs may be
// relayed here and writes them into `down` and `up`; everything else, and every packet this
// program cannot handle exactly, goes up the stack untouched (counted in `fallbacks` when it
// was addressed to one of our sockets). Keys and values mirror src/transport/offload/keys.rs:
// addresses are 16 bytes (IPv4 as ::ffff:a.b.c.d), ports in network byte order.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define KIND_LISTENER 1
#define KIND_RELAY 2

#define CHANNEL_HEADER 4
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

// Fallback reasons: the index into `fallbacks` (src/transport/offload/keys.rs, Fallback).
enum fallback {
    FB_NOT_CHANNEL_DATA = 0,
    FB_GSO = 1,
    FB_FRAGMENT = 2,
    FB_IP_OPTIONS = 3,
    FB_LENGTH = 4,
    FB_TOO_BIG = 5,
    FB_NO_ENTRY = 6,
    FB_ERROR = 7,
    FB_NO_ROUTE = 8,
    FB_LOCAL = 9,
    FB_COUNT = 10,
};

struct addr_key {
    __u8 ip[16];
    __be16 port;
    __u16 pad;
};

struct addr_val {
    __u32 kind;
};

struct down_key {
    __u8 client_ip[16];
    __u8 listener_ip[16];
    __be16 client_port;
    __be16 listener_port;
    __be16 channel;
    __u16 pad;
};

struct down_val {
    __u8 relay_ip[16];
    __u8 peer_ip[16];
    __be16 relay_port;
    __be16 peer_port;
    __u32 pad;
    __u64 packets;
    __u64 bytes;
};

struct up_key {
    __u8 peer_ip[16];
    __u8 relay_ip[16];
    __be16 peer_port;
    __be16 relay_port;
};

struct up_val {
    __u8 listener_ip[16];
    __u8 client_ip[16];
    __be16 listener_port;
    __be16 client_port;
    __be16 channel;
    __u16 pad;
    __u64 packets;
    __u64 bytes;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, struct addr_key);
    __type(value, struct addr_val);
} addrs SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct down_key);
    __type(value, struct down_val);
} down SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct up_key);
    __type(value, struct up_val);
} up SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, FB_COUNT);
    __type(key, __u32);
    __type(value, __u64);
} fallbacks SEC(".maps");

// Scratch space for summing a payload (too big for the 512-byte BPF stack).
#define CHUNK 256
#define MAX_CHUNKS 8
struct chunk {
    __u8 b[CHUNK];
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct chunk);
} scratch SEC(".maps");

// A parsed UDP packet: the addresses as 16-byte keys, and where its headers are.
struct pkt {
    __u8 saddr[16];
    __u8 daddr[16];
    __be16 sport;
    __be16 dport;
    __u16 udp_len;  // host order, from the UDP header
    __be16 udp_csum;
    __u32 l4_off;   // offset of the UDP header from the start of the frame
    __u8 v6;
};

static __always_inline void fallback(__u32 reason)
{
    __u64 *n = bpf_map_lookup_elem(&fallbacks, &reason);
    if (n)
        *n += 1;
}

static __always_inline void v4_mapped(__u8 *out, __be32 a)
{
    __builtin_memset(out, 0, 10);
    out[10] = 0xff;
    out[11] = 0xff;
    __builtin_memcpy(out + 12, &a, 4);
}

// Reasons found before the address is known to be ours are returned as FB_COUNT + reason,
// so the caller counts them only for our addresses.
#define PARSE_NOT_OURS -1
#define PARSE_OK 0

// Parse Ethernet + IPv4/IPv6 + UDP. Returns PARSE_NOT_OURS (not UDP, or not parseable: pass
// without counting), PARSE_OK, or 1 + a fallback reason that applies if the packet is ours.
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
    int pending = PARSE_OK;
    if (skb->protocol == bpf_htons(ETH_P_IP)) {
        struct iphdr ip;
        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
            return PARSE_NOT_OURS;
        if (ip.version != 4 || ip.protocol != IPPROTO_UDP)
            return PARSE_NOT_OURS;
        __u16 frag = bpf_ntohs(ip.frag_off);
        if (frag & IP_OFFSET)
            return PARSE_NOT_OURS; // no UDP header in this fragment
        if (frag & IP_MF)
            pending = 1 + FB_FRAGMENT;
        __u32 ihl = ip.ihl * 4;
        if (ihl < sizeof(ip))
            return PARSE_NOT_OURS;
        if (ihl != sizeof(ip) && pending == PARSE_OK)
            pending = 1 + FB_IP_OPTIONS;
        if (bpf_ntohs(ip.tot_len) != skb->len - ETH_HLEN && pending == PARSE_OK)
            pending = 1 + FB_LENGTH;
        v4_mapped(p->saddr, ip.saddr);
        v4_mapped(p->daddr, ip.daddr);
        p->l4_off = ETH_HLEN + ihl;
        p->v6 = 0;
    } else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr ip;
        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
            return PARSE_NOT_OURS;
        // Extension headers (fragments among them) are not parsed: such packets pass.
        if (ip.version != 6 || ip.nexthdr != IPPROTO_UDP)
            return PARSE_NOT_OURS;
        if (bpf_ntohs(ip.payload_len) != skb->len - ETH_HLEN - sizeof(ip))
            pending = 1 + FB_LENGTH;
        __builtin_memcpy(p->saddr, &ip.saddr, 16);
        __builtin_memcpy(p->daddr, &ip.daddr, 16);
        p->l4_off = ETH_HLEN + sizeof(ip);
        p->v6 = 1;
    } else {
        return PARSE_NOT_OURS;
    }
    struct udphdr udp;
    if (bpf_skb_load_bytes(skb, p->l4_off, &udp, sizeof(udp)) < 0)
        return PARSE_NOT_OURS;
    p->sport = udp.source;
    p->dport = udp.dest;
    p->udp_len = bpf_ntohs(udp.len);
    p->udp_csum = udp.check;
    if (p->udp_len != skb->len - p->l4_off && pending == PARSE_OK)
        pending = 1 + FB_LENGTH;
    if (skb->gso_segs > 1 || skb->gso_size != 0)
        pending = 1 + FB_GSO;
    return pending;
}

// Pseudo-header words that change: both addresses and the length (as a 32-bit word).
struct pseudo {
    __u8 saddr[16];
    __u8 daddr[16];
    __be16 len;
    __u16 zero;
};

// The UDP header without its checksum, and the 4 bytes after it that are (or become) a
// ChannelData header. Payload bytes keep their even offset, so they drop out of the sum.
struct l4words {
    __be16 sport;
    __be16 dport;
    __be16 len;
    __u16 zero;
    __be16 ch_number;
    __be16 ch_len;
};

struct v4words {
    __be32 saddr;
    __be32 daddr;
    __be16 tot_len;
    __u16 zero;
};

// The UDP checksum of the (rewritten) datagram at `l4`, computed whole and stored. The
// shrunk datagram needs this: locally sent skbs carry CHECKSUM_PARTIAL state whose start
// no longer points at the UDP header once the headers in front of it moved, so the
// receiving stack verifies the checksum in full.
static __always_inline int full_udp_csum(struct __sk_buff *skb, __u32 l4, struct pseudo *np,
                                         __u16 udp_len, __u8 v6)
{
    __s64 sum;
    if (v6) {
        struct {
            __u8 saddr[16];
            __u8 daddr[16];
            __be32 len;
            __u8 zero[3];
            __u8 next;
        } ph = {0};
        __builtin_memcpy(ph.saddr, np->saddr, 16);
        __builtin_memcpy(ph.daddr, np->daddr, 16);
        ph.len = bpf_htonl(udp_len);
        ph.next = IPPROTO_UDP;
        sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
    } else {
        struct {
            __u8 saddr[4];
            __u8 daddr[4];
            __u8 zero;
            __u8 proto;
            __be16 len;
        } ph = {0};
        __builtin_memcpy(ph.saddr, np->saddr + 12, 4);
        __builtin_memcpy(ph.daddr, np->daddr + 12, 4);
        ph.proto = IPPROTO_UDP;
        ph.len = bpf_htons(udp_len);
        sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
    }
    if (sum < 0)
        return -1;
    __u16 zero = 0;
    if (bpf_skb_store_bytes(skb, l4 + offsetof(struct udphdr, check), &zero, 2, 0) < 0)
        return -1;
    __u32 key = 0;
    struct chunk *c = bpf_map_lookup_elem(&scratch, &key);
    if (!c)
        return -1;
    __u32 off = l4;
    __u32 left = udp_len;
    for (int i = 0; i < MAX_CHUNKS && left > 0; i++) {
        __u32 n = left > CHUNK ? CHUNK : left;
        asm volatile("" : "+r"(n)); // keep the mask below where the verifier sees it
        n &= 0x1ff;
        if (n == 0 || n > CHUNK)
            return -1;
        if (n < CHUNK)
            __builtin_memset(c->b, 0, CHUNK); // zero padding adds nothing to the sum
        if (bpf_skb_load_bytes(skb, off, c->b, n) < 0)
            return -1;
        __u32 words = (n + 3) & ~3U;
        if (words > CHUNK)
            return -1;
        sum = bpf_csum_diff(0, 0, (__be32 *)c->b, words, sum);
        if (sum < 0)
            return -1;
        off += n;
        left -= n;
    }
    if (left)
        return -1;
    __u32 s = (__u32)sum;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    __u16 check = ~s & 0xffff;
    if (check == 0)
        check = 0xffff;
    return bpf_skb_store_bytes(skb, l4 + offsetof(struct udphdr, check), &check, 2, 0) < 0 ? -1 : 0;
}

// Rewrite addresses, ports and lengths of the (already resized) packet and fix the
// checksums incrementally. `old*`/`new*` describe the header words before and after.
static __always_inline int rewrite(struct __sk_buff *skb, struct pkt *p, struct pseudo *op,
                                   struct pseudo *np, struct l4words *ol, struct l4words *nl,
                                   int grow)
{
    __u32 l4 = p->l4_off;
    if (!p->v6) {
        struct v4words ov = {0}, nv = {0};
        __builtin_memcpy(&ov.saddr, op->saddr + 12, 4);
        __builtin_memcpy(&ov.daddr, op->daddr + 12, 4);
        __builtin_memcpy(&nv.saddr, np->saddr + 12, 4);
        __builtin_memcpy(&nv.daddr, np->daddr + 12, 4);
        ov.tot_len = bpf_htons(bpf_ntohs(ol->len) + 20);
        nv.tot_len = bpf_htons(bpf_ntohs(nl->len) + 20);
        __s64 d = bpf_csum_diff((__be32 *)&ov, sizeof(ov), (__be32 *)&nv, sizeof(nv), 0);
        if (d < 0)
            return -1;
        if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, tot_len), &nv.tot_len, 2, 0) < 0 ||
            bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, saddr), &nv.saddr, 8, 0) < 0)
            return -1;
        if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), 0, d, 0) < 0)
            return -1;
    } else {
        __be16 plen = nl->len;
        if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, payload_len), &plen, 2, 0) < 0 ||
            bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, saddr), np->saddr, 32, 0) < 0)
            return -1;
    }
    // The new UDP header (checksum field carried over) and, growing, the ChannelData header.
    struct {
        __be16 sport;
        __be16 dport;
        __be16 len;
        __be16 check;
        __be16 ch_number;
        __be16 ch_len;
    } hdr = {nl->sport, nl->dport, nl->len, p->udp_csum, nl->ch_number, nl->ch_len};
    if (bpf_skb_store_bytes(skb, l4, &hdr, grow ? 12 : 8, 0) < 0)
        return -1;
    if (!grow)
        return full_udp_csum(skb, l4, np, bpf_ntohs(nl->len), p->v6);
    if (!p->v6 && p->udp_csum == 0)
        return 0; // IPv4 without a UDP checksum stays without one
    __u32 csum_off = l4 + offsetof(struct udphdr, check);
    __u64 mangled = p->v6 ? 0 : BPF_F_MARK_MANGLED_0;
    __u32 asize = p->v6 ? 32 : 0;
    __s64 dp;
    if (p->v6)
        dp = bpf_csum_diff((__be32 *)op, sizeof(*op), (__be32 *)np, sizeof(*np), 0);
    else {
        // IPv4: only the last 4 bytes of each address are in the pseudo header.
        struct v4words ov = {0}, nv = {0};
        __builtin_memcpy(&ov.saddr, op->saddr + 12, 4);
        __builtin_memcpy(&ov.daddr, op->daddr + 12, 4);
        __builtin_memcpy(&nv.saddr, np->saddr + 12, 4);
        __builtin_memcpy(&nv.daddr, np->daddr + 12, 4);
        ov.tot_len = op->len;
        nv.tot_len = np->len;
        dp = bpf_csum_diff((__be32 *)&ov, sizeof(ov), (__be32 *)&nv, sizeof(nv), 0);
    }
    (void)asize;
    if (dp < 0)
        return -1;
    __s64 dl = bpf_csum_diff((__be32 *)ol, sizeof(*ol), (__be32 *)nl, sizeof(*nl), 0);
    if (dl < 0)
        return -1;
    if (bpf_l4_csum_replace(skb, csum_off, 0, dp, BPF_F_PSEUDO_HDR | mangled) < 0)
        return -1;
    if (bpf_l4_csum_replace(skb, csum_off, 0, dl, mangled) < 0)
        return -1;
    return 0;
}

// ----- forwarding between interfaces -----------------------------------------------------
//
// On `lo` the rewritten packet's destination is local and the stack takes it (TC_ACT_OK).
// On any other interface the new source is one of our addresses, so the stack would drop
// the packet as a martian if it were handed up for forwarding: instead the route to the new
// destination is looked up (bpf_fib_lookup, as the ingress interface would forward it) before
// the packet is touched, and the rewritten packet leaves through the egress interface with
// bpf_redirect_neigh (the kernel fills in the MAC addresses, resolving the neighbour if it
// has to). When there is no such route (unreachable, forwarding disabled on the interface),
// the destination is local, or the packet would exceed the egress MTU, the original packet
// goes up untouched and user space relays it.

#define LOOPBACK_IFINDEX 1
#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

// Where a rewritten packet goes: ifindex 0 is "up the stack" (lo), else out of ifindex.
struct fwd {
    __u32 ifindex;
    struct bpf_redir_neigh nh;
};

// Decide where the packet rewritten to `np` (ports `sport` -> `dport`) goes. Returns 0, or
// 1 + the fallback reason when it must go up untouched.
static __always_inline int route(struct __sk_buff *skb, struct pkt *p, struct pseudo *np,
                                 __be16 sport, __be16 dport, struct fwd *f)
{
    f->ifindex = 0;
    if (skb->ifindex == LOOPBACK_IFINDEX)
        return 0;
    struct bpf_fib_lookup fl = {0};
    fl.l4_protocol = IPPROTO_UDP;
    fl.sport = sport;
    fl.dport = dport;
    fl.ifindex = skb->ifindex;
    __u16 udp_len = bpf_ntohs(np->len);
    if (p->v6) {
        fl.family = AF_INET6;
        fl.tot_len = udp_len + sizeof(struct ipv6hdr);
        __builtin_memcpy(fl.ipv6_src, np->saddr, 16);
        __builtin_memcpy(fl.ipv6_dst, np->daddr, 16);
    } else {
        fl.family = AF_INET;
        fl.tot_len = udp_len + sizeof(struct iphdr);
        __builtin_memcpy(&fl.ipv4_src, np->saddr + 12, 4);
        __builtin_memcpy(&fl.ipv4_dst, np->daddr + 12, 4);
    }
    long r = bpf_fib_lookup(skb, &fl, sizeof(fl), 0);
    if (r == BPF_FIB_LKUP_RET_NOT_FWDED)
        return 1 + FB_LOCAL;
    if (r == BPF_FIB_LKUP_RET_FRAG_NEEDED)
        return 1 + FB_TOO_BIG;
    if (r != BPF_FIB_LKUP_RET_SUCCESS && r != BPF_FIB_LKUP_RET_NO_NEIGH)
        return 1 + FB_NO_ROUTE;
    // The lookup left the next hop (the gateway, or the destination on link) in *_dst.
    f->ifindex = fl.ifindex;
    f->nh.nh_family = fl.family;
    if (fl.family == AF_INET6)
        __builtin_memcpy(f->nh.ipv6_nh, fl.ipv6_dst, 16);
    else
        f->nh.ipv4_nh = fl.ipv4_dst;
    return 0;
}

// Deliver the rewritten packet where `route` said.
static __always_inline int deliver(struct __sk_buff *skb, struct fwd *f)
{
    if (!f->ifindex)
        return TC_ACT_OK;
    return bpf_redirect_neigh(f->ifindex, &f->nh, sizeof(f->nh), 0);
}

// client -> listener ChannelData ==> relay -> peer.
static __always_inline int to_peer(struct __sk_buff *skb, struct pkt *p)
{
    __be16 ch[2];
    if (p->udp_len < sizeof(struct udphdr) + CHANNEL_HEADER ||
        bpf_skb_load_bytes(skb, p->l4_off + sizeof(struct udphdr), ch, sizeof(ch)) < 0) {
        fallback(FB_NOT_CHANNEL_DATA);
        return TC_ACT_OK;
    }
    __u16 number = bpf_ntohs(ch[0]);
    if (number < 0x4000 || number > 0x7FFF) {
        fallback(FB_NOT_CHANNEL_DATA);
        return TC_ACT_OK;
    }
    __u16 data_len = p->udp_len - sizeof(struct udphdr) - CHANNEL_HEADER;
    if (bpf_ntohs(ch[1]) != data_len) {
        fallback(FB_LENGTH); // padded (stream framing) or truncated: user space decides
        return TC_ACT_OK;
    }
    if (p->udp_len - CHANNEL_HEADER > CHUNK * MAX_CHUNKS) {
        fallback(FB_TOO_BIG); // too long to checksum here
        return TC_ACT_OK;
    }
    struct down_key k = {0};
    __builtin_memcpy(k.client_ip, p->saddr, 16);
    __builtin_memcpy(k.listener_ip, p->daddr, 16);
    k.client_port = p->sport;
    k.listener_port = p->dport;
    k.channel = ch[0];
    struct down_val *v = bpf_map_lookup_elem(&down, &k);
    if (!v) {
        fallback(FB_NO_ENTRY);
        return TC_ACT_OK;
    }
    struct pseudo op = {0}, np = {0};
    __builtin_memcpy(op.saddr, p->saddr, 16);
    __builtin_memcpy(op.daddr, p->daddr, 16);
    __builtin_memcpy(np.saddr, v->relay_ip, 16);
    __builtin_memcpy(np.daddr, v->peer_ip, 16);
    op.len = bpf_htons(p->udp_len);
    np.len = bpf_htons(p->udp_len - CHANNEL_HEADER);
    struct l4words ol = {p->sport, p->dport, op.len, 0, ch[0], ch[1]};
    struct l4words nl = {v->relay_port, v->peer_port, np.len, 0, 0, 0};
    struct fwd f;
    int unroutable = route(skb, p, &np, nl.sport, nl.dport, &f);
    if (unroutable) {
        fallback(unroutable - 1);
        return TC_ACT_OK; // nothing changed yet
    }
    if (bpf_skb_adjust_room(skb, -CHANNEL_HEADER, BPF_ADJ_ROOM_NET, 0) < 0) {
        fallback(FB_ERROR);
        return TC_ACT_OK; // nothing changed yet
    }
    if (rewrite(skb, p, &op, &np, &ol, &nl, 0) < 0) {
        fallback(FB_ERROR);
        return TC_ACT_SHOT; // half rewritten: drop rather than deliver garbage
    }
    __sync_fetch_and_add(&v->packets, 1);
    __sync_fetch_and_add(&v->bytes, data_len);
    return deliver(skb, &f);
}

// peer -> relay ==> listener -> client ChannelData.
static __always_inline int to_client(struct __sk_buff *skb, struct pkt *p)
{
    struct up_key k = {0};
    __builtin_memcpy(k.peer_ip, p->saddr, 16);
    __builtin_memcpy(k.relay_ip, p->daddr, 16);
    k.peer_port = p->sport;
    k.relay_port = p->dport;
    struct up_val *v = bpf_map_lookup_elem(&up, &k);
    if (!v) {
        fallback(FB_NO_ENTRY);
        return TC_ACT_OK;
    }
    __u16 data_len = p->udp_len - sizeof(struct udphdr);
    if (p->udp_len < sizeof(struct udphdr) || p->udp_len > 0xFFFF - CHANNEL_HEADER) {
        fallback(FB_TOO_BIG);
        return TC_ACT_OK;
    }
    __u32 mtu = 0;
    if (bpf_check_mtu(skb, 0, &mtu, CHANNEL_HEADER, 0) != BPF_MTU_CHK_RET_SUCCESS) {
        fallback(FB_TOO_BIG);
        return TC_ACT_OK;
    }
    struct pseudo op = {0}, np = {0};
    __builtin_memcpy(op.saddr, p->saddr, 16);
    __builtin_memcpy(op.daddr, p->daddr, 16);
    __builtin_memcpy(np.saddr, v->listener_ip, 16);
    __builtin_memcpy(np.daddr, v->client_ip, 16);
    op.len = bpf_htons(p->udp_len);
    np.len = bpf_htons(p->udp_len + CHANNEL_HEADER);
    struct l4words ol = {p->sport, p->dport, op.len, 0, 0, 0};
    struct l4words nl = {v->listener_port, v->client_port, np.len, 0, v->channel,
                         bpf_htons(data_len)};
    struct fwd f;
    int unroutable = route(skb, p, &np, nl.sport, nl.dport, &f);
    if (unroutable) {
        fallback(unroutable - 1);
        return TC_ACT_OK; // nothing changed yet
    }
    if (bpf_skb_adjust_room(skb, CHANNEL_HEADER, BPF_ADJ_ROOM_NET, 0) < 0) {
        fallback(FB_ERROR);
        return TC_ACT_OK;
    }
    if (rewrite(skb, p, &op, &np, &ol, &nl, 1) < 0) {
        fallback(FB_ERROR);
        return TC_ACT_SHOT;
    }
    __sync_fetch_and_add(&v->packets, 1);
    __sync_fetch_and_add(&v->bytes, data_len);
    return deliver(skb, &f);
}

SEC("classifier")
int stunnerd_tc(struct __sk_buff *skb)
{
    struct pkt p = {0};
    int parsed = parse(skb, &p);
    if (parsed == PARSE_NOT_OURS)
        return TC_ACT_OK;
    struct addr_key ak = {0};
    __builtin_memcpy(ak.ip, p.daddr, 16);
    ak.port = p.dport;
    struct addr_val *a = bpf_map_lookup_elem(&addrs, &ak);
    if (!a)
        return TC_ACT_OK; // not ours: the one lookup every other packet pays
    if (parsed != PARSE_OK) {
        fallback(parsed - 1);
        return TC_ACT_OK;
    }
    if (a->kind == KIND_LISTENER)
        return to_peer(skb, &p);
    if (a->kind == KIND_RELAY)
        return to_client(skb, &p);
    return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#include "offload_xdp.h"
