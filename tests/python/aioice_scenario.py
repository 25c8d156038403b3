#!/usr/bin/env python3
"""TURN-over-UDP scenario driven by aioice (https://github.com/aiortc/aioice).

Run with the repo's venv (created by scripts/setup.sh):

    .venv/bin/python tests/python/aioice_scenario.py --server 127.0.0.1:PORT \
        --username user --password pass --peer 127.0.0.1:ECHO_PORT

Every option can also come from the environment (TURN_SERVER, TURN_TRANSPORT, TURN_USERNAME,
TURN_PASSWORD, TURN_SECRET, TURN_PEER, TURN_FORBIDDEN_PEER, TURN_STRANGER_IP, TURN_TIMEOUT).

Steps (one output line each: `STEP <name> OK|FAIL <detail>`; exit status 1 if any fails):

  turn_endpoint          create_turn_endpoint() + a round trip through it (ChannelData) + close
  allocate               Allocate via the inner protocol object (TurnClientUdpProtocol.connect)
  create_permission      CreatePermission for the echo peer
  send_indication        Send indication to the echo peer, Data indication back
  channel_bind           ChannelBind 0x4000 to the echo peer
  channel_data           ChannelData round trip (odd payload size)
  no_permission          a socket on --stranger-ip (no permission) sends to the relayed
                         address: nothing may reach the client within ~1 s
  stranger_permitted     after CreatePermission for --stranger-ip its data does arrive
                         (positive control for the previous step)
  forbidden_peer         CreatePermission for --forbidden-peer gets error 403
  refresh                Refresh with LIFETIME 300 succeeds and returns LIFETIME
  deallocate             Refresh with LIFETIME 0 succeeds
  refresh_after_delete   a later Refresh (after --dealloc-wait seconds) gets error 437

Only addresses given on the command line are contacted. The forbidden peer only ever appears
inside a CreatePermission request: no datagram is sent to it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import socket
import struct
import sys
import time
from typing import Any, Callable

from aioice import stun
from aioice.turn import (
    TurnClientUdpProtocol,
    create_turn_endpoint,
    is_channel_data,
    make_integrity_key,
)

STEP_TIMEOUT = 8.0
RESULTS: list[tuple[str, bool, str]] = []


def report(name: str, ok: bool, detail: str = "") -> None:
    RESULTS.append((name, ok, detail))
    print(f"STEP {name} {'OK' if ok else 'FAIL'} {detail}".rstrip(), flush=True)


def hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def rest_credentials(user: str, secret: str, ttl: int = 3600) -> tuple[str, str]:
    """TURN REST API credentials: `<expiry>:<user>` / base64(HMAC-SHA1(secret, username))."""
    username = f"{int(time.time()) + ttl}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


class RecordingTurnClient(TurnClientUdpProtocol):
    """aioice's UDP TURN client protocol that also records every Data indication and
    ChannelData message it receives, before aioice's own (permission-filtering) handling."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: asyncio.Queue[tuple[str, Any, bytes]] = asyncio.Queue()

    def datagram_received(self, data: bytes | str, addr: tuple[str, int]) -> None:
        raw = bytes(data) if not isinstance(data, str) else data.encode()
        if len(raw) >= 4 and is_channel_data(raw):
            channel, length = struct.unpack("!HH", raw[0:4])
            self.events.put_nowait(("channel", channel, raw[4 : 4 + length]))
        else:
            try:
                msg = stun.parse_message(raw)
            except ValueError:
                msg = None
            if (
                msg is not None
                and msg.message_method == stun.Method.DATA
                and msg.message_class == stun.Class.INDICATION
            ):
                self.events.put_nowait(
                    (
                        "data",
                        msg.attributes.get("XOR-PEER-ADDRESS"),
                        msg.attributes.get("DATA", b""),
                    )
                )
        super().datagram_received(data, addr)

    def drain(self) -> list[tuple[str, Any, bytes]]:
        out = []
        while not self.events.empty():
            out.append(self.events.get_nowait())
        return out

    async def wait_event(
        self, pred: Callable[[tuple[str, Any, bytes]], bool], timeout: float
    ) -> tuple[str, Any, bytes] | None:
        """First event matching `pred` within `timeout` (non-matching ones are dropped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                ev = await asyncio.wait_for(self.events.get(), remaining)
            except asyncio.TimeoutError:
                return None
            if pred(ev):
                return ev


class _RawTransaction:
    """Stands in for aioice's stun.Transaction in protocol.transactions: takes any response
    (signed or not) so that error responses without MESSAGE-INTEGRITY are seen too."""

    def __init__(self) -> None:
        self.future: asyncio.Future[stun.Message] = (
            asyncio.get_running_loop().create_future()
        )

    def response_received(self, message: stun.Message, addr: tuple[str, int]) -> None:
        if not self.future.done():
            self.future.set_result(message)


async def raw_request(
    proto: TurnClientUdpProtocol,
    make: Callable[[], stun.Message],
    tries: int = 5,
    rto: float = 0.25,
) -> stun.Message | None:
    """Authenticated request with short, bounded retransmissions. Follows 401/438 challenges
    (at most twice). Returns the final response or None if nothing came back."""
    resp: stun.Message | None = None
    for _ in range(3):
        msg = make()
        if proto.integrity_key is not None:
            msg.attributes["USERNAME"] = proto.username
            msg.attributes["NONCE"] = proto.nonce
            msg.attributes["REALM"] = proto.realm
            msg.add_message_integrity(proto.integrity_key)
        txn = _RawTransaction()
        proto.transactions[msg.transaction_id] = txn  # type: ignore[assignment]
        resp = None
        try:
            delay = rto
            for _ in range(tries):
                proto.send_stun(msg, proto.server)
                try:
                    resp = await asyncio.wait_for(asyncio.shield(txn.future), delay)
                    break
                except asyncio.TimeoutError:
                    delay = min(delay * 2, 1.0)
        finally:
            proto.transactions.pop(msg.transaction_id, None)
        if resp is None:
            return None
        if (
            resp.message_class == stun.Class.ERROR
            and resp.error_code in (401, 438)
            and "NONCE" in resp.attributes
            and proto.username is not None
            and proto.password is not None
        ):
            proto.nonce = resp.attributes["NONCE"]
            if "REALM" in resp.attributes:
                proto.realm = resp.attributes["REALM"]
            if proto.realm is not None:
                proto.integrity_key = make_integrity_key(
                    proto.username, proto.realm, proto.password
                )
            continue
        return resp
    return resp


def describe(resp: stun.Message | None, key: bytes | None) -> str:
    if resp is None:
        return "no response"
    cls = {
        stun.Class.RESPONSE: "success",
        stun.Class.ERROR: "error",
        stun.Class.INDICATION: "indication",
        stun.Class.REQUEST: "request",
    }[resp.message_class]
    code = resp.attributes.get("ERROR-CODE")
    signed = key is not None and resp.check_message_integrity(key)
    return f"{cls} code={code[0] if code else None} reason={code[1] if code else ''!r} signed={signed}"


class EchoPeer(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        print(f"# turn_endpoint error_received: {exc!r}", flush=True)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def step(name: str, coro: Any) -> bool:
    try:
        detail = await asyncio.wait_for(coro, STEP_TIMEOUT)
        report(name, True, detail or "")
        return True
    except AssertionError as exc:
        report(name, False, str(exc))
    except asyncio.TimeoutError:
        report(name, False, f"timed out after {STEP_TIMEOUT}s")
    except Exception as exc:  # noqa: BLE001 - report everything as a failed step
        report(name, False, f"{type(exc).__name__}: {exc}")
    return False


async def scenario(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    server = args.server
    if args.secret:
        username, password = rest_credentials(args.username or "user", args.secret)
    else:
        username, password = args.username, args.password

    echo_transport = None
    if args.peer is None:
        echo_transport, _ = await loop.create_datagram_endpoint(
            EchoPeer, local_addr=("127.0.0.1", 0)
        )
        peer = echo_transport.get_extra_info("sockname")[:2]
        print(f"# using built-in echo peer {peer}", flush=True)
    else:
        peer = args.peer
    peer = (peer[0], int(peer[1]))

    # --- high-level API: create_turn_endpoint ------------------------------------------
    async def turn_endpoint() -> str:
        transport, proto = await create_turn_endpoint(
            Collector, server, username, password, lifetime=600, transport="udp"
        )
        try:
            relayed = transport.get_extra_info("sockname")
            payload = b"endpoint-" + os.urandom(6).hex().encode()
            got = None
            for _ in range(3):
                transport.sendto(payload, peer)
                try:
                    while True:
                        data, addr = await asyncio.wait_for(proto.queue.get(), 1.0)
                        if data == payload:
                            got = addr
                            break
                except asyncio.TimeoutError:
                    continue
                break
            assert got is not None, f"no echo through {relayed}"
            assert tuple(got[:2]) == peer, f"echo came from {got}, expected {peer}"
        finally:
            transport.close()
        await asyncio.wait_for(proto.lost, 5.0)
        return f"relayed={relayed[0]}:{relayed[1]} closed"

    await step("turn_endpoint", turn_endpoint())

    # --- inner protocol object ---------------------------------------------------------
    _, proto = await loop.create_datagram_endpoint(
        lambda: RecordingTurnClient(
            server,
            username=username,
            password=password,
            lifetime=600,
            channel_refresh_time=500,
        ),
        remote_addr=server,
    )
    relayed: tuple[str, int] | None = None

    async def allocate() -> str:
        nonlocal relayed
        relayed = await proto.connect()
        # We refresh explicitly below; stop aioice's background refresher.
        if proto.refresh_task is not None:
            proto.refresh_task.cancel()
            proto.refresh_task = None
        return f"relayed={relayed[0]}:{relayed[1]} mapped={proto.mapped_address}"

    if not await step("allocate", allocate()):
        proto.transport.close()
        return
    assert relayed is not None

    async def create_permission(addr: tuple[str, int]) -> str:
        req = stun.Message(
            message_method=stun.Method.CREATE_PERMISSION,
            message_class=stun.Class.REQUEST,
        )
        req.attributes["XOR-PEER-ADDRESS"] = addr
        await proto.request_with_retry(req)
        return f"peer={addr[0]}:{addr[1]}"

    await step("create_permission", create_permission(peer))

    async def send_indication() -> str:
        payload = b"send-ind-" + os.urandom(6).hex().encode()
        proto.drain()
        for attempt in range(3):
            ind = stun.Message(
                message_method=stun.Method.SEND, message_class=stun.Class.INDICATION
            )
            ind.attributes["XOR-PEER-ADDRESS"] = peer
            ind.attributes["DATA"] = payload
            proto.send_stun(ind, server)
            ev = await proto.wait_event(lambda e: e[2] == payload, 1.0)
            if ev is not None:
                kind, source, _ = ev
                assert kind == "data", f"echo came back as {kind}, expected a Data indication"
                assert source is not None and tuple(source) == peer, (
                    f"XOR-PEER-ADDRESS {source}, expected {peer}"
                )
                return f"attempts={attempt + 1}"
        raise AssertionError("no Data indication with the echoed payload")

    await step("send_indication", send_indication())

    channel = 0x4000

    async def channel_bind() -> str:
        await proto.channel_bind(channel, peer)
        # Keep aioice's bookkeeping consistent (its datagram_received uses it).
        proto.channel_to_peer[channel] = peer
        proto.peer_to_channel[peer] = channel
        return f"channel=0x{channel:04x}"

    await step("channel_bind", channel_bind())

    async def channel_data() -> str:
        payload = b"chan-data-" + os.urandom(6).hex().encode() + b"odd"  # 25 bytes
        assert len(payload) % 4 != 0
        proto.drain()
        for attempt in range(3):
            proto._send(struct.pack("!HH", channel, len(payload)) + payload)
            ev = await proto.wait_event(lambda e: e[2] == payload, 1.0)
            if ev is not None:
                kind, ch, _ = ev
                assert kind == "channel", f"echo came back as {kind}, expected ChannelData"
                assert ch == channel, f"ChannelData on 0x{ch:04x}, expected 0x{channel:04x}"
                return f"len={len(payload)} attempts={attempt + 1}"
        raise AssertionError("no ChannelData with the echoed payload")

    await step("channel_data", channel_data())

    stranger: socket.socket | None = None
    try:
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind((args.stranger_ip, 0))
    except OSError as exc:
        report("no_permission", False, f"cannot bind {args.stranger_ip}: {exc}")
        stranger = None

    if stranger is not None:
        stranger_addr = stranger.getsockname()[:2]

        async def no_permission() -> str:
            payload = b"stranger-" + os.urandom(6).hex().encode()
            proto.drain()
            for _ in range(3):
                stranger.sendto(payload, relayed)
                await asyncio.sleep(0.05)
            ev = await proto.wait_event(lambda e: e[2] == payload, 1.0)
            assert ev is None, f"data from {stranger_addr} without permission arrived as {ev[0]}"
            return f"from={stranger_addr[0]}:{stranger_addr[1]} nothing arrived in 1s"

        await step("no_permission", no_permission())

        async def stranger_permitted() -> str:
            await create_permission(stranger_addr)
            payload = b"permitted-" + os.urandom(6).hex().encode()
            proto.drain()
            for attempt in range(3):
                stranger.sendto(payload, relayed)
                ev = await proto.wait_event(lambda e: e[2] == payload, 1.0)
                if ev is not None:
                    kind, source, _ = ev
                    assert kind == "data", f"arrived as {kind}, expected a Data indication"
                    assert source is not None and tuple(source) == tuple(stranger_addr), (
                        f"XOR-PEER-ADDRESS {source}, expected {stranger_addr}"
                    )
                    return f"attempts={attempt + 1}"
            raise AssertionError("data from the permitted stranger did not arrive")

        await step("stranger_permitted", stranger_permitted())
        stranger.close()

    async def forbidden_peer() -> str:
        def make() -> stun.Message:
            req = stun.Message(
                message_method=stun.Method.CREATE_PERMISSION,
                message_class=stun.Class.REQUEST,
            )
            req.attributes["XOR-PEER-ADDRESS"] = args.forbidden_peer
            return req

        resp = await raw_request(proto, make)
        detail = describe(resp, proto.integrity_key)
        assert resp is not None and resp.message_class == stun.Class.ERROR, detail
        assert resp.error_code == 403, f"expected 403: {detail}"
        return detail

    await step("forbidden_peer", forbidden_peer())

    def refresh_request(lifetime: int) -> stun.Message:
        req = stun.Message(
            message_method=stun.Method.REFRESH, message_class=stun.Class.REQUEST
        )
        req.attributes["LIFETIME"] = lifetime
        return req

    async def refresh() -> str:
        resp, _ = await proto.request_with_retry(refresh_request(300))
        assert "LIFETIME" in resp.attributes, "success response without LIFETIME"
        return f"lifetime={resp.attributes['LIFETIME']}"

    await step("refresh", refresh())

    async def deallocate() -> str:
        resp, _ = await proto.request_with_retry(refresh_request(0))
        return f"lifetime={resp.attributes.get('LIFETIME')}"

    await step("deallocate", deallocate())

    async def refresh_after_delete() -> str:
        if args.dealloc_wait > 0:
            await asyncio.sleep(args.dealloc_wait)
        resp = await raw_request(proto, lambda: refresh_request(300))
        detail = describe(resp, proto.integrity_key)
        assert resp is not None and resp.message_class == stun.Class.ERROR, detail
        assert resp.error_code == 437, f"expected 437: {detail}"
        return detail

    await step("refresh_after_delete", refresh_after_delete())

    proto.transport.close()
    if echo_transport is not None:
        echo_transport.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server", type=hostport, default=env("TURN_SERVER"), help="HOST:PORT")
    p.add_argument("--transport", default=env("TURN_TRANSPORT", "udp"), choices=["udp"])
    p.add_argument("--username", default=env("TURN_USERNAME", "user"))
    p.add_argument("--password", default=env("TURN_PASSWORD", "pass"))
    p.add_argument(
        "--secret",
        default=env("TURN_SECRET"),
        help="TURN REST shared secret (then --username is the user id)",
    )
    p.add_argument(
        "--peer",
        type=hostport,
        default=hostport(env("TURN_PEER")) if env("TURN_PEER") else None,
        help="HOST:PORT of a UDP echo peer (default: a built-in one on 127.0.0.1)",
    )
    p.add_argument(
        "--forbidden-peer",
        type=hostport,
        default=hostport(env("TURN_FORBIDDEN_PEER", "192.0.2.1:9")),
        help="peer the server must refuse (403); only named in CreatePermission",
    )
    p.add_argument(
        "--stranger-ip",
        default=env("TURN_STRANGER_IP", "127.0.0.2"),
        help="local IP (not the peer's) to send unpermitted data from",
    )
    p.add_argument(
        "--dealloc-wait",
        type=float,
        default=float(env("TURN_DEALLOC_WAIT", "0")),
        help="seconds to wait after deallocating before the Refresh that must get 437 "
        "(coturn frees allocations on its next ~1 s timer tick, and a Refresh before that "
        "revives it; RFC-strict servers need 0)",
    )
    p.add_argument("--timeout", type=float, default=float(env("TURN_TIMEOUT", "45")))
    args = p.parse_args(argv)
    if args.server is None:
        p.error("--server (or TURN_SERVER) is required")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)

    async def run() -> None:
        await asyncio.wait_for(scenario(args), args.timeout)

    try:
        asyncio.run(run())
    except asyncio.TimeoutError:
        report("overall", False, f"timed out after {args.timeout}s")
    except Exception as exc:  # noqa: BLE001
        report("overall", False, f"{type(exc).__name__}: {exc}")
    failed = [name for name, ok, _ in RESULTS if not ok]
    print(f"SUMMARY steps={len(RESULTS)} failed={len(failed)} {' '.join(failed)}".rstrip())
    return 1 if failed or not RESULTS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
