#!/usr/bin/env python3
"""Capture the UDP datagrams an interface receives and check their checksums.

Used by tests/it/offload_veth.rs in the client and peer namespaces: the datagrams the
kernel offload rewrote arrive here, and each one's UDP checksum (and, for IPv4, header
checksum) is recomputed over the bytes as received. A datagram whose checksum the sender
left to offload (the kernel marks it TP_STATUS_CSUMNOTREADY) carries only a partial sum and
cannot be checked: it is counted as `partial`, and the test requires none.

Prints one line `CAPTURE {json}` at the end: udp, v4, v6, bad, partial, zero (IPv4 without a
checksum). Ends at SIGTERM (the test sends it once its client has finished) or after
--seconds.
"""

import argparse
import json
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_CSUMNOTREADY = 1 << 3
PACKET_OUTGOING = 4


def fold(s):
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ones_sum(data):
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack("!%dH" % (len(data) // 2), data))


def check(frame, stats, port, partial):
    if len(frame) < 14:
        return
    (ethertype,) = struct.unpack("!H", frame[12:14])
    ip = frame[14:]
    if ethertype == 0x0800 and len(ip) >= 20 and ip[9] == 17:
        ihl = (ip[0] & 0xF) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        udp = ip[ihl:total]
        if len(udp) < 8 or (port and port not in struct.unpack("!HH", udp[0:4])):
            return
        if partial:
            stats["partial"] += 1
            return
        stats["v4"] += 1
        if fold(ones_sum(ip[:ihl])) != 0xFFFF:
            stats["bad_ip"] += 1
        if udp[6:8] == b"\0\0":
            stats["zero"] += 1
            return
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    elif ethertype == 0x86DD and len(ip) >= 40 and ip[6] == 17:
        plen = struct.unpack("!H", ip[4:6])[0]
        udp = ip[40 : 40 + plen]
        if len(udp) < 8 or (port and port not in struct.unpack("!HH", udp[0:4])):
            return
        if partial:
            stats["partial"] += 1
            return
        stats["v6"] += 1
        pseudo = ip[8:40] + struct.pack("!IxxxB", len(udp), 17)
    else:
        return
    stats["udp"] += 1
    if fold(ones_sum(pseudo) + ones_sum(udp)) != 0xFFFF:
        stats["bad"] += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", required=True)
    ap.add_argument("--port", type=int, default=0, help="only datagrams from or to this port")
    ap.add_argument("--seconds", type=float, default=60)
    a = ap.parse_args()
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind((a.iface, 0))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    stats = dict(udp=0, v4=0, v6=0, bad=0, bad_ip=0, partial=0, zero=0)
    print("READY", flush=True)
    deadline = time.monotonic() + a.seconds
    while time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], 0.2)
        if not r:
            if stop:
                break  # the socket is drained
            continue
        frame, anc, _, addr = s.recvmsg(65536, socket.CMSG_SPACE(64))
        if addr[2] == PACKET_OUTGOING:
            continue
        partial = False
        for level, kind, data in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= 4:
                (status,) = struct.unpack("I", data[:4])
                partial = bool(status & TP_STATUS_CSUMNOTREADY)
        check(frame, stats, a.port, partial)
    print("CAPTURE " + json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
