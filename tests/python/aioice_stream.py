"""aioice over TURN-TCP or TURN-TLS: allocate, relay datagrams of odd sizes to a UDP echo
peer and back (ChannelData padded to 4 bytes on the stream), then close.

Prints `STEP <name> OK|FAIL <detail>` lines; exits 1 on any failure.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import ssl
import sys
import time

from aioice.turn import create_turn_endpoint


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


class Collector(asyncio.DatagramProtocol):
    def __init__(self):
        self.queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.queue.put_nowait((data, addr))


def step(name, ok, detail=""):
    print(f"STEP {name} {'OK' if ok else 'FAIL'} {detail}", flush=True)
    return ok


async def main(args) -> int:
    host, port = args.server.rsplit(":", 1)
    server = (host, int(port))
    username, password = args.username, args.password
    if args.secret:
        username = f"{int(time.time()) + 3600}:{args.username}"
        mac = hmac.new(args.secret.encode(), username.encode(), hashlib.sha1).digest()
        password = base64.b64encode(mac).decode()
    ctx = None
    if args.tls:
        ctx = ssl.create_default_context(cafile=args.ca)
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    peer = echo.get_extra_info("sockname")[:2]
    ok = True
    try:
        transport, proto = await asyncio.wait_for(
            create_turn_endpoint(
                Collector, server, username, password, ssl=ctx, transport="tcp"
            ),
            args.timeout,
        )
    except Exception as e:  # noqa: BLE001 - report any failure as a step
        step("allocate", False, repr(e))
        return 1
    relayed = transport.get_extra_info("sockname")
    ok &= step("allocate", relayed is not None, f"relayed={relayed}")
    try:
        for size in (1, 2, 3, 5, 121, 333, 1000):
            payload = bytes([size % 251]) * size
            transport.sendto(payload, peer)
            data, addr = await asyncio.wait_for(proto.queue.get(), args.timeout)
            ok &= step(f"echo_{size}", data == payload and tuple(addr[:2]) == tuple(peer),
                       f"got {len(data)} bytes from {addr}")
    except Exception as e:  # noqa: BLE001
        ok &= step("echo", False, repr(e))
    finally:
        transport.close()
        echo.close()
    return 0 if ok else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--username", default="user")
    p.add_argument("--password", default="pass")
    p.add_argument("--secret", default="")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--ca", default=None)
    p.add_argument("--timeout", type=float, default=10.0)
    sys.exit(asyncio.run(main(p.parse_args())))
