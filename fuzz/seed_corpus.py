#!/usr/bin/env python3
"""Write the seed corpus of every fuzz target into fuzz/corpus/<target>/.

Seeds come from what the tests use: the RFC 5769 STUN vectors (src/stun/tests.rs), TURN
requests and responses as turnutils and the core tests send them (built here with valid
MESSAGE-INTEGRITY and FINGERPRINT), ChannelData frames, the example configs in config/, and
the Kubernetes manifests in config/k8s/ (the inputs of tests/k8s_golden.rs). Deterministic:
re-running writes the same files. Usage: python3 fuzz/seed_corpus.py
"""

import hashlib
import hmac
import os
import re
import shutil
import struct
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")
COOKIE = 0x2112A442
REALM = b"fuzz.example"


def attr(typ, value):
    pad = (4 - len(value) % 4) % 4
    return struct.pack(">HH", typ, len(value)) + value + b"\0" * pad


def msg_type(method, cls):
    c = {"req": 0, "ind": 1, "ok": 2, "err": 3}[cls]
    m = method
    return (m & 0xF) | ((m & 0x70) << 1) | ((m & 0xF80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)


def stun(method, cls, tid, attrs, key=None, fingerprint=False):
    body = b"".join(attrs)
    mtype = msg_type(method, cls)
    if key is not None:
        head = struct.pack(">HHI", mtype, len(body) + 24, COOKIE) + tid
        body += attr(0x0008, hmac.new(key, head + body, hashlib.sha1).digest())
    if fingerprint:
        head = struct.pack(">HHI", mtype, len(body) + 8, COOKIE) + tid
        crc = (zlib.crc32(head + body) ^ 0x5354554E) & 0xFFFFFFFF
        body += attr(0x8028, struct.pack(">I", crc))
    return struct.pack(">HHI", mtype, len(body), COOKIE) + tid + body


def xor_addr(ip4, port, tid):
    x = bytes(a ^ b for a, b in zip(bytes(ip4), struct.pack(">I", COOKIE)))
    return struct.pack(">BBH", 0, 1, port ^ (COOKIE >> 16)) + x


def xor_addr6(ip6, port, tid):
    key = struct.pack(">I", COOKIE) + tid
    return struct.pack(">BBH", 0, 2, port ^ (COOKIE >> 16)) + bytes(a ^ b for a, b in zip(ip6, key))


def hexs(s):
    return bytes.fromhex("".join(s.split()))


# RFC 5769 test vectors (the same as src/stun/tests.rs).
RFC5769 = [
    hexs("""00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae 80 22 00 10 53 54 55 4e
    20 74 65 73 74 20 63 6c 69 65 6e 74 00 24 00 04 6e 00 01 ff 80 29 00 08 93 2f f9 b1 51 26
    3b 36 00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20 00 08 00 14 9a ea a7 0c bf d8 cb 56
    78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2 80 28 00 04 e5 7a 3b cf"""),
    hexs("""01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae 80 22 00 0b 74 65 73 74
    20 76 65 63 74 6f 72 20 00 20 00 08 00 01 a1 47 e1 12 a6 43 00 08 00 14 2b 91 f5 99 fd 9e
    90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7 80 28 00 04 c0 7d 4c 96"""),
    hexs("""01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae 80 22 00 0b 74 65 73 74
    20 76 65 63 74 6f 72 20 00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2
    b9 d9 00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41 80 28 00 04
    c8 fb 0b 4c"""),
    hexs("""00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e 00 06 00 12 e3 83 9e e3
    83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00 00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34
    64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41 00 14 00 0b 65 78 61 6d 70 6c 65 2e
    6f 72 67 00 00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66"""),
]


def turn_messages(key):
    """TURN traffic as a client and server exchange it, MESSAGE-INTEGRITY under `key`."""
    tid = bytes(range(1, 13))
    tid2 = bytes(range(20, 32))
    auth = [attr(0x0006, b"alice"), attr(0x0014, REALM), attr(0x0015, b"0" * 32)]
    peer = xor_addr([10, 0, 0, 1], 9000, tid)
    peer6 = xor_addr6(bytes.fromhex("20010db8000000000000000000000002"), 9002, tid)
    return [
        stun(0x001, "req", tid, []),  # Binding
        stun(0x001, "req", tid, [], fingerprint=True),
        stun(0x003, "req", tid, [attr(0x0019, bytes([17, 0, 0, 0]))]),  # Allocate, no auth
        stun(0x003, "req", tid, [attr(0x0019, bytes([17, 0, 0, 0]))] + auth, key, True),
        stun(0x003, "req", tid, [attr(0x0019, bytes([6, 0, 0, 0])), attr(0x0017, bytes([2, 0, 0, 0]))] + auth, key),
        stun(0x003, "req", tid, [attr(0x0019, bytes([17, 0, 0, 0])), attr(0x0018, b"\x80"), attr(0x001A, b"")] + auth, key),
        stun(0x003, "req", tid, [attr(0x0019, bytes([17, 0, 0, 0])), attr(0x0022, bytes(8))] + auth, key),
        stun(0x004, "req", tid2, [attr(0x000D, struct.pack(">I", 600))] + auth, key),
        stun(0x004, "req", tid2, [attr(0x000D, struct.pack(">I", 0))] + auth, key, True),
        stun(0x008, "req", tid2, [attr(0x0012, peer), attr(0x0012, peer6)] + auth, key),
        stun(0x009, "req", tid2, [attr(0x000C, bytes([0x40, 0, 0, 0])), attr(0x0012, peer)] + auth, key),
        stun(0x006, "ind", tid2, [attr(0x0012, peer), attr(0x0013, b"hello peer")]),
        stun(0x007, "ind", tid2, [attr(0x0012, peer), attr(0x0013, b"hello client!")]),
        stun(0x00A, "req", tid2, [attr(0x0012, peer)] + auth, key),
        stun(0x00B, "req", tid2, [attr(0x002A, struct.pack(">I", 7))] + auth, key),
        stun(0x003, "err", tid, [attr(0x0009, bytes([0, 0, 4, 1]) + b"Unauthorized"), attr(0x0014, REALM), attr(0x0015, b"0" * 32)]),
        stun(0x003, "err", tid, [attr(0x0009, bytes([0, 0, 4, 20]) + b"Unknown Attribute"), attr(0x000A, bytes([0, 0x30, 0, 0x31]))]),
        stun(0x003, "ok", tid, [attr(0x0016, xor_addr([127, 0, 0, 1], 50000, tid)), attr(0x0020, xor_addr([192, 0, 2, 1], 5000, tid)), attr(0x000D, struct.pack(">I", 600)), attr(0x8022, b"stunnerd")], key, True),
        stun(0x001, "ok", tid, [attr(0x0001, bytes([0, 1, 0x13, 0x88, 192, 0, 2, 1])), attr(0x8023, bytes([0, 1, 0x0d, 0x96, 10, 0, 0, 9]))]),
        stun(0x001, "req", tid, [attr(0x0024, struct.pack(">I", 0x6E0001FF)), attr(0x0025, b""), attr(0x802A, bytes(8)), attr(0x001C, bytes(32))], key, True),
    ]


def channel_data(n, payload, pad=True):
    out = struct.pack(">HH", n, len(payload)) + payload
    if pad:
        out += b"\0" * ((4 - len(out) % 4) % 4)
    return out


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def core_sequence_seeds():
    """Op streams in the format of fuzz_targets/core_sequence.rs."""
    # request: op (0..3, client in bits 4-5), method sel, tid byte, tid byte, flags, attr bytes,
    # cred selector byte, fingerprint byte.
    def req(client, method, flags, body, cred_byte=0, fp=0):
        return bytes([(client << 4) | 0, method, 1, 2, flags]) + bytes(body) + bytes([cred_byte, fp])

    alloc = req(0, 0, 0x40 | 1 | 2, [0, 20])  # valid creds, REQUESTED-TRANSPORT UDP, LIFETIME 600
    perm = req(0, 3, 0x40 | 4, [0, 0])  # CreatePermission for PEERS[0]
    bind = req(0, 4, 0x40 | 4 | 8, [0, 0, 0, 0])  # ChannelBind 0x4000 to PEERS[0]
    send = req(0, 5, 4 | 16, [0, 0, 5]) + b"hello"  # Send indication
    cdata = bytes([5, 0, 4]) + b"data"  # ChannelData on 0x4000
    peer = bytes([6, 1, 0, 4]) + b"back"  # peer datagram to relay 1 from PEERS[0]
    tick = bytes([7, 200, 3])  # advance 200 * 4 s
    refresh0 = req(0, 2, 0x40 | 2, [0])  # Refresh lifetime 0
    return {
        "allocate": alloc,
        "allocate_relay": alloc + perm + bind + send + cdata + peer + tick,
        "two_clients": alloc + req(1, 0, 0x40 | 1, [0]) + req(2, 1, 0x40 | 1 | 32, [2, 0, 2, 4, 2, 0, 0, 0]) + tick,
        "refresh_delete": alloc + refresh0 + peer,
        "unauthenticated": req(0, 0, 1, [0]) + req(1, 6, 0, []) + req(2, 0, 0x80 | 1, [0]),
        "stale_wrong": req(0, 0, 0xC0 | 1, [0]) + req(0, 0, 0x80 | 1, [0]) + req(0, 0, 0x40 | 1, [0], 4),
        "tcp": bytes([0x80 | 0]) + req(0, 0, 0x40 | 1, [2])[1:] + bytes([0x80 | 0]) + req(0, 7, 0x40 | 4, [0])[1:],
    }


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    key = hashlib.md5(b"alice:" + REALM + b":wonderland").digest()
    msgs = RFC5769 + turn_messages(key) + turn_messages(b"fuzz-password")
    cds = [
        channel_data(0x4000, b"", False),
        channel_data(0x4001, b"abc", False),
        channel_data(0x4001, b"abc"),
        channel_data(0x7FFF, bytes(range(64))),
        channel_data(0x4000, b"x" * 1200),
    ]
    for i, m in enumerate(msgs):
        write("stun_message", f"msg{i:02}", m)
        for mode in (0, 2):
            write("stun_diff", f"msg{i:02}_m{mode}", bytes([mode]) + m)
    for i, c in enumerate(cds):
        write("channel_data", f"cd{i}", c)
        write("stun_message", f"cd{i}", c)
    # stream_framing: mode byte (bit 0: built from a recipe; bits 1..: control length),
    # control bytes (chunk sizes), then the stream.
    stream = b"".join(msgs[4:12]) + b"".join(cds)
    write("stream_framing", "stream", bytes([8 << 1]) + bytes([1, 7, 3, 60, 2, 9, 13, 0]) + stream)
    write("stream_framing", "stream_cd", bytes([3 << 1]) + bytes([0, 1, 2]) + b"".join(cds))
    write("stream_framing", "tail", bytes([2 << 1]) + bytes([5, 1]) + msgs[5] + msgs[6][:30])
    write("stream_framing", "garbage", bytes([2 << 1]) + bytes([3, 3]) + cds[1] + b"\xff\x00\x00\x04junk")
    recipe = bytes([0, 3]) + b"abc" + bytes([1, 5]) + b"hello" + bytes([3, 0]) + bytes([6, 8]) + bytes(8)
    write("stream_framing", "recipe", bytes([1 | (4 << 1)]) + bytes([1, 2, 3, 4]) + recipe)
    # core_sequence
    for name, data in core_sequence_seeds().items():
        write("core_sequence", name, data)
    # config_decode: the example configs.
    cfg_dir = os.path.join(ROOT, "config")
    for name in sorted(os.listdir(cfg_dir)):
        p = os.path.join(cfg_dir, name)
        if os.path.isfile(p) and name.endswith((".json", ".yaml")):
            write("config_decode", name, open(p, "rb").read())
    write("config_decode", "minimal.yaml", b"version: v1\nauth: {type: static, credentials: {username: alice, password: wonderland}}\nlisteners: [{name: udp, address: $STUNNER_ADDR, routes: [media]}]\nclusters: [{name: media, endpoints: [10.0.0.0/8]}]\n")
    write("config_decode", "v1alpha1.yaml", b"version: v1alpha1\nadmin: {name: x}\nauth: {type: longterm, credentials: {secret: s3cret}}\nlisteners: [{name: tcp, protocol: TURN-TCP, public_address: 1.2.3.4, port: 3479, min_port: 10000, max_port: 20000}]\n")
    # k8s_load: the manifests the golden tests render.
    k8s_dir = os.path.join(cfg_dir, "k8s")
    for sub in ("", "variants"):
        d = os.path.join(k8s_dir, sub)
        for name in sorted(os.listdir(d)):
            if name.endswith(".yaml"):
                write("k8s_load", (sub + "_" if sub else "") + name, open(os.path.join(d, name), "rb").read())
    everything = b"\n---\n".join(
        open(os.path.join(k8s_dir, n), "rb").read() for n in sorted(os.listdir(k8s_dir)) if n.endswith(".yaml")
    )
    write("k8s_load", "all.yaml", everything)


if __name__ == "__main__":
    main()
