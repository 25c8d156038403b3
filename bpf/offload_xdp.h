// SPDX-License-Identifier: MIT
//
// The XDP engine of stunnerd's kernel fast path (admin.offload_engine: XDP), included at the
// end of offload.c: the same maps, keys, parsing result (`struct pkt`) and fallback reasons
// as the TC program, the same two rewrites, on an xdp_buff instead of an skb.
//
//   client -> listener ChannelData  ==>  relay -> peer: the Ethernet, IP and UDP headers are
//       rewritten 4 bytes further in and the frame start moves forward over the old
//       ChannelData header (bpf_xdp_adjust_head(+4));
//   peer -> relay UDP               ==>  listener -> client: the frame start moves back 4
//       bytes (bpf_xdp_adjust_head(-4)) and the headers plus a ChannelData header are
//       written there.
//
// Everything is decided before the packet changes (entry, lengths, checksum of the payload,
// where it goes), so a packet this program cannot relay exactly leaves untouched with
// XDP_PASS and a counted fallback. The UDP checksum is computed whole (the payload summed in
// bounded chunks, as the TC program does): a packet sent on this host arrives with only the
// pseudo-header sum in its checksum field (CHECKSUM_PARTIAL) and, once its headers moved, the
// receiving stack verifies it in full. The IPv4 header checksum is computed afresh.
//
// Delivery follows the TC program's route(): on `lo` up the stack (XDP_PASS); elsewhere, when
// the kernel's FIB forwards the new destination to a resolved neighbour, XDP_REDIRECT out of
// the egress interface with the neighbour's MAC addresses; anything else (local destination,
// no route, unresolved neighbour, too big for the egress MTU) is passed up as it came and
// counted as `local_destination` / `no_route` / `too_big`.

#define XHDR4 (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr))
#define XHDR6 (sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + sizeof(struct udphdr))

// The headers of the packet as it came (IPv4 without options, or IPv6 without extension
// headers: anything else has fallen back before these are used), each aligned on the stack;
// one of ip4/ip6 is used. `ch` is the 4 bytes after the UDP header (zero if the payload is
// shorter).
struct xhdr {
    struct ethhdr eth;
    __u16 pad;
    struct iphdr ip4;
    struct ipv6hdr ip6;
    struct udphdr udp;
    __be16 ch[2];
};

// parse() for an xdp_buff: the same results (PARSE_NOT_OURS, PARSE_OK, 1 + reason), and the
// headers copied into `h`.
static __always_inline int xdp_parse(struct xdp_md *ctx, struct pkt *p, struct xhdr *h)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    __u32 frame = end - data;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return PARSE_NOT_OURS;
    int pending = PARSE_OK;
    // A multi-buffer frame (only a program loaded for frags sees one; this one is not, but
    // the length says it either way) is not rewritten here.
    if (bpf_xdp_get_buff_len(ctx) != frame)
        pending = 1 + FB_TOO_BIG;
    struct udphdr *udp;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end)
            return PARSE_NOT_OURS;
        if (ip->version != 4 || ip->protocol != IPPROTO_UDP)
            return PARSE_NOT_OURS;
        __u16 frag = bpf_ntohs(ip->frag_off);
        if (frag & IP_OFFSET)
            return PARSE_NOT_OURS;
        if (frag & IP_MF && pending == PARSE_OK)
            pending = 1 + FB_FRAGMENT;
        __u32 ihl = ip->ihl * 4;
        if (ihl < sizeof(*ip))
            return PARSE_NOT_OURS;
        if (ihl != sizeof(*ip) && pending == PARSE_OK)
            pending = 1 + FB_IP_OPTIONS;
        if (bpf_ntohs(ip->tot_len) != frame - ETH_HLEN && pending == PARSE_OK)
            pending = 1 + FB_LENGTH;
        v4_mapped(p->saddr, ip->saddr);
        v4_mapped(p->daddr, ip->daddr);
        p->l4_off = ETH_HLEN + ihl;
        p->v6 = 0;
        udp = (void *)ip + (ihl & 0x3c);
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end)
            return PARSE_NOT_OURS;
        if (ip->version != 6 || ip->nexthdr != IPPROTO_UDP)
            return PARSE_NOT_OURS;
        if (bpf_ntohs(ip->payload_len) != frame - ETH_HLEN - sizeof(*ip) && pending == PARSE_OK)
            pending = 1 + FB_LENGTH;
        __builtin_memcpy(p->saddr, &ip->saddr, 16);
        __builtin_memcpy(p->daddr, &ip->daddr, 16);
        p->l4_off = ETH_HLEN + sizeof(*ip);
        p->v6 = 1;
        udp = (void *)(ip + 1);
    } else {
        return PARSE_NOT_OURS;
    }
    if ((void *)(udp + 1) > end)
        return PARSE_NOT_OURS;
    p->sport = udp->source;
    p->dport = udp->dest;
    p->udp_len = bpf_ntohs(udp->len);
    p->udp_csum = udp->check;
    if (p->udp_len != frame - p->l4_off && pending == PARSE_OK)
        pending = 1 + FB_LENGTH;
    if (pending != PARSE_OK)
        return pending;
    // Exact from here on: copy the fixed-size headers (and the 4 bytes after UDP, if any).
    __builtin_memcpy(&h->eth, eth, sizeof(*eth));
    __builtin_memcpy(&h->udp, udp, sizeof(*udp));
    if (p->v6)
        __builtin_memcpy(&h->ip6, data + ETH_HLEN, sizeof(h->ip6));
    else
        __builtin_memcpy(&h->ip4, data + ETH_HLEN, sizeof(h->ip4));
    if ((void *)(udp + 1) + 4 <= end)
        __builtin_memcpy(h->ch, udp + 1, 4);
    return PARSE_OK;
}

// The ones' complement sum of `len` bytes of the frame from `off` (an even offset from the
// UDP header), added to `seed`; < 0 when it cannot be computed.
static __always_inline __s64 xdp_sum(struct xdp_md *ctx, __u32 off, __u32 len, __s64 seed)
{
    __u32 key = 0;
    struct chunk *c = bpf_map_lookup_elem(&scratch, &key);
    if (!c)
        return -1;
    __s64 sum = seed;
    __u32 left = len;
    for (int i = 0; i < MAX_CHUNKS && left > 0; i++) {
        __u32 n = left > CHUNK ? CHUNK : left;
        asm volatile("" : "+r"(n));
        n &= 0x1ff;
        if (n == 0 || n > CHUNK)
            return -1;
        if (n < CHUNK)
            __builtin_memset(c->b, 0, CHUNK);
        if (bpf_xdp_load_bytes(ctx, off, c->b, n) < 0)
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
    return left ? -1 : sum;
}

static __always_inline __u16 fold(__s64 sum)
{
    __u32 s = (__u32)sum;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return ~s & 0xffff;
}

// The UDP checksum of a datagram from `src` to `dst` whose UDP header is `udp` (check 0),
// followed by `ch` (the ChannelData header, when `with_ch`) and a payload summing to `psum`.
static __always_inline int udp_csum(__u8 *src, __u8 *dst, __u8 v6, struct udphdr *udp,
                                    __be16 *ch, int with_ch, __s64 psum, __be16 *out)
{
    __s64 sum;
    __u16 len = bpf_ntohs(udp->len);
    if (v6) {
        struct {
            __u8 saddr[16];
            __u8 daddr[16];
            __be32 len;
            __u8 zero[3];
            __u8 next;
        } ph = {0};
        __builtin_memcpy(ph.saddr, src, 16);
        __builtin_memcpy(ph.daddr, dst, 16);
        ph.len = bpf_htonl(len);
        ph.next = IPPROTO_UDP;
        sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), psum);
    } else {
        struct {
            __u8 saddr[4];
            __u8 daddr[4];
            __u8 zero;
            __u8 proto;
            __be16 len;
        } ph = {0};
        __builtin_memcpy(ph.saddr, src + 12, 4);
        __builtin_memcpy(ph.daddr, dst + 12, 4);
        ph.proto = IPPROTO_UDP;
        ph.len = bpf_htons(len);
        sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), psum);
    }
    if (sum < 0)
        return -1;
    struct {
        struct udphdr udp;
        __be16 ch[2];
    } l4 = {0};
    l4.udp = *udp;
    l4.udp.check = 0;
    if (with_ch) {
        l4.ch[0] = ch[0];
        l4.ch[1] = ch[1];
    }
    sum = bpf_csum_diff(0, 0, (__be32 *)&l4, with_ch ? 12 : 8, sum);
    if (sum < 0)
        return -1;
    __u16 c = fold(sum);
    *out = c ? c : 0xffff;
    return 0;
}

// Where a rewritten packet to `dst` goes, decided as the TC program's route() does: on
// `lo` up the stack (XDP_PASS: the destination is local); elsewhere XDP_REDIRECT out of the
// interface the kernel's FIB forwards it to (`fib` holds it and the MAC addresses), or
// -1 - fallback reason when the original must go up: a local destination (handed up with
// one of our addresses as its source, the stack would drop it as a martian), no route or
// forwarding disabled, a neighbour not resolved yet (XDP cannot resolve it; user space's
// next send does), or too big for the egress MTU.
static __always_inline int xdp_route(struct xdp_md *ctx, struct pkt *p, __u8 *src, __u8 *dst,
                                     __be16 sport, __be16 dport, __u16 ip_len,
                                     struct bpf_fib_lookup *fib)
{
    if (ctx->ingress_ifindex == LOOPBACK_IFINDEX)
        return XDP_PASS;
    fib->ifindex = ctx->ingress_ifindex;
    fib->l4_protocol = IPPROTO_UDP;
    fib->sport = sport;
    fib->dport = dport;
    fib->tot_len = ip_len;
    if (p->v6) {
        fib->family = AF_INET6;
        __builtin_memcpy(fib->ipv6_src, src, 16);
        __builtin_memcpy(fib->ipv6_dst, dst, 16);
    } else {
        fib->family = AF_INET;
        __builtin_memcpy(&fib->ipv4_src, src + 12, 4);
        __builtin_memcpy(&fib->ipv4_dst, dst + 12, 4);
    }
    long rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
    if (rc == BPF_FIB_LKUP_RET_SUCCESS)
        return XDP_REDIRECT;
    if (rc == BPF_FIB_LKUP_RET_NOT_FWDED)
        return -1 - FB_LOCAL;
    if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
        return -1 - FB_TOO_BIG;
    return -1 - FB_NO_ROUTE;
}

// Write the new headers at the (moved) frame start and return the verdict.
static __always_inline int xdp_emit(struct xdp_md *ctx, struct xhdr *h, int v6, int with_ch,
                                    int delta, int verdict, struct bpf_fib_lookup *fib)
{
    if (bpf_xdp_adjust_head(ctx, delta) < 0)
        return -1;
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    // The frame has at least the headers (and the ChannelData header when growing); the
    // per-family checks below are what the verifier follows.
    if (data + (v6 ? XHDR6 : XHDR4) + (with_ch ? CHANNEL_HEADER : 0) > end)
        return -1;
    struct ethhdr *eth = data;
    __builtin_memcpy(eth, &h->eth, sizeof(*eth));
    if (v6) {
        if (data + XHDR6 > end)
            return -1;
        __builtin_memcpy(data + ETH_HLEN, &h->ip6, sizeof(h->ip6));
        __builtin_memcpy(data + ETH_HLEN + sizeof(h->ip6), &h->udp, sizeof(h->udp));
    } else {
        if (data + XHDR4 > end)
            return -1;
        __builtin_memcpy(data + ETH_HLEN, &h->ip4, sizeof(h->ip4));
        __builtin_memcpy(data + ETH_HLEN + sizeof(h->ip4), &h->udp, sizeof(h->udp));
    }
    if (with_ch) {
        if (data + XHDR6 + CHANNEL_HEADER <= end && v6)
            __builtin_memcpy(data + XHDR6, h->ch, CHANNEL_HEADER);
        else if (data + XHDR4 + CHANNEL_HEADER <= end && !v6)
            __builtin_memcpy(data + XHDR4, h->ch, CHANNEL_HEADER);
        else
            return -1;
    }
    if (verdict == XDP_REDIRECT) {
        __builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
        __builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
        return bpf_redirect(fib->ifindex, 0);
    }
    return XDP_PASS;
}

// Fill in the new IP and UDP headers in `h` (addresses, ports, lengths, checksums).
static __always_inline int xdp_headers(struct xhdr *h, struct pkt *p, __u8 *src, __u8 *dst,
                                       __be16 sport, __be16 dport, __u16 udp_len, int with_ch,
                                       __be16 *ch, __s64 psum)
{
    struct udphdr *udp = &h->udp;
    if (p->v6) {
        __builtin_memcpy(&h->ip6.saddr, src, 16);
        __builtin_memcpy(&h->ip6.daddr, dst, 16);
        h->ip6.payload_len = bpf_htons(udp_len);
    } else {
        __builtin_memcpy(&h->ip4.saddr, src + 12, 4);
        __builtin_memcpy(&h->ip4.daddr, dst + 12, 4);
        h->ip4.tot_len = bpf_htons(udp_len + sizeof(struct iphdr));
        h->ip4.check = 0;
        __s64 s = bpf_csum_diff(0, 0, (__be32 *)&h->ip4, sizeof(struct iphdr), 0);
        if (s < 0)
            return -1;
        h->ip4.check = fold(s);
    }
    udp->source = sport;
    udp->dest = dport;
    udp->len = bpf_htons(udp_len);
    __be16 check = 0;
    if (udp_csum(src, dst, p->v6, udp, ch, with_ch, psum, &check) < 0)
        return -1;
    udp->check = check;
    if (with_ch) {
        h->ch[0] = ch[0];
        h->ch[1] = ch[1];
    }
    return 0;
}

// client -> listener ChannelData ==> relay -> peer.
static __always_inline int xdp_to_peer(struct xdp_md *ctx, struct pkt *p, struct xhdr *h)
{
    __be16 *ch = h->ch;
    if (p->udp_len < sizeof(struct udphdr) + CHANNEL_HEADER) {
        fallback(FB_NOT_CHANNEL_DATA);
        return XDP_PASS;
    }
    __u16 number = bpf_ntohs(ch[0]);
    if (number < 0x4000 || number > 0x7FFF) {
        fallback(FB_NOT_CHANNEL_DATA);
        return XDP_PASS;
    }
    __u16 data_len = p->udp_len - sizeof(struct udphdr) - CHANNEL_HEADER;
    if (bpf_ntohs(ch[1]) != data_len) {
        fallback(FB_LENGTH);
        return XDP_PASS;
    }
    if (data_len > CHUNK * MAX_CHUNKS) {
        fallback(FB_TOO_BIG);
        return XDP_PASS;
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
        return XDP_PASS;
    }
    __u16 udp_len = p->udp_len - CHANNEL_HEADER;
    __u16 ip_len = udp_len + (p->v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr));
    struct bpf_fib_lookup fib = {0};
    int verdict = xdp_route(ctx, p, v->relay_ip, v->peer_ip, v->relay_port, v->peer_port,
                            ip_len, &fib);
    if (verdict < 0) {
        fallback(-1 - verdict);
        return XDP_PASS;
    }
    __s64 psum = xdp_sum(ctx, p->l4_off + sizeof(struct udphdr) + CHANNEL_HEADER, data_len, 0);
    if (psum < 0 || xdp_headers(h, p, v->relay_ip, v->peer_ip, v->relay_port, v->peer_port,
                                udp_len, 0, ch, psum) < 0) {
        fallback(FB_ERROR);
        return XDP_PASS; // nothing changed yet
    }
    int rc = xdp_emit(ctx, h, p->v6, 0, CHANNEL_HEADER, verdict, &fib);
    if (rc < 0) {
        fallback(FB_ERROR);
        return XDP_DROP; // the frame moved: drop rather than deliver garbage
    }
    __sync_fetch_and_add(&v->packets, 1);
    __sync_fetch_and_add(&v->bytes, data_len);
    return rc;
}

// peer -> relay ==> listener -> client ChannelData.
static __always_inline int xdp_to_client(struct xdp_md *ctx, struct pkt *p, struct xhdr *h)
{
    struct up_key k = {0};
    __builtin_memcpy(k.peer_ip, p->saddr, 16);
    __builtin_memcpy(k.relay_ip, p->daddr, 16);
    k.peer_port = p->sport;
    k.relay_port = p->dport;
    struct up_val *v = bpf_map_lookup_elem(&up, &k);
    if (!v) {
        fallback(FB_NO_ENTRY);
        return XDP_PASS;
    }
    if (p->udp_len < sizeof(struct udphdr) ||
        p->udp_len - sizeof(struct udphdr) > CHUNK * MAX_CHUNKS) {
        fallback(FB_TOO_BIG);
        return XDP_PASS;
    }
    __u16 data_len = p->udp_len - sizeof(struct udphdr);
    __u16 udp_len = p->udp_len + CHANNEL_HEADER;
    __u16 ip_len = udp_len + (p->v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr));
    struct bpf_fib_lookup fib = {0};
    int verdict = xdp_route(ctx, p, v->listener_ip, v->client_ip, v->listener_port,
                            v->client_port, ip_len, &fib);
    if (verdict < 0) {
        fallback(-1 - verdict);
        return XDP_PASS;
    }
    if (verdict == XDP_PASS) {
        __u32 mtu = 0;
        if (bpf_check_mtu(ctx, 0, &mtu, CHANNEL_HEADER, 0) != BPF_MTU_CHK_RET_SUCCESS) {
            fallback(FB_TOO_BIG);
            return XDP_PASS;
        }
    }
    __be16 ch[2] = {v->channel, bpf_htons(data_len)};
    __s64 psum = xdp_sum(ctx, p->l4_off + sizeof(struct udphdr), data_len, 0);
    if (psum < 0 || xdp_headers(h, p, v->listener_ip, v->client_ip, v->listener_port,
                                v->client_port, udp_len, 1, ch, psum) < 0) {
        fallback(FB_ERROR);
        return XDP_PASS;
    }
    int rc = xdp_emit(ctx, h, p->v6, 1, -CHANNEL_HEADER, verdict, &fib);
    if (rc < 0) {
        fallback(FB_ERROR);
        return XDP_DROP;
    }
    __sync_fetch_and_add(&v->packets, 1);
    __sync_fetch_and_add(&v->bytes, data_len);
    return rc;
}

SEC("xdp")
int stunnerd_xdp(struct xdp_md *ctx)
{
    struct pkt p = {0};
    struct xhdr h = {0};
    int parsed = xdp_parse(ctx, &p, &h);
    if (parsed == PARSE_NOT_OURS)
        return XDP_PASS;
    struct addr_key ak = {0};
    __builtin_memcpy(ak.ip, p.daddr, 16);
    ak.port = p.dport;
    struct addr_val *a = bpf_map_lookup_elem(&addrs, &ak);
    if (!a)
        return XDP_PASS;
    if (parsed != PARSE_OK) {
        fallback(parsed - 1);
        return XDP_PASS;
    }
    if (a->kind == KIND_LISTENER)
        return xdp_to_peer(ctx, &p, &h);
    if (a->kind == KIND_RELAY)
        return xdp_to_client(ctx, &p, &h);
    return XDP_PASS;
}
