#!/usr/bin/python3
"""An independent control-plane peer for the agent's tests, written from docs/protocol.md
with Python's websockets (Debian python3-websockets). It validates every message the agent
sends against the JSON Schemas in docs/schema (python3-jsonschema), acknowledges events
and results, sends a few commands, and writes a report once it has seen enough.

usage: peer.py --schemas DIR --token-file F --ports-file F --report F [--heartbeats N]
"""
import argparse
import asyncio
import http
import json
import pathlib
import sys

import jsonschema
import websockets

ap = argparse.ArgumentParser()
ap.add_argument("--schemas", required=True)
ap.add_argument("--token-file", required=True)
ap.add_argument("--ports-file", required=True)
ap.add_argument("--report", required=True)
ap.add_argument("--heartbeats", type=int, default=3)
ap.add_argument("--abuse", action="store_true",
                help="send malformed JSON, an unknown type, an oversized frame, and close mid-frame")
args = ap.parse_args()

schemas = {}
store = {}
for p in pathlib.Path(args.schemas).glob("*.json"):
    s = json.loads(p.read_text())
    store[s["$id"]] = s
    schemas[p.stem] = s
for s in store.values():
    jsonschema.Draft202012Validator.check_schema(s)
resolver_store = dict(store)
token = pathlib.Path(args.token_file).read_text().strip()

report = {"errors": [], "types": {}, "results": {}, "acked": 0, "hello": None, "heartbeat_bytes": [], "connections": 0}
done = asyncio.Event()
COMMANDS = [
    {"id": "py-1", "name": "ping"},
    {"id": "py-2", "name": "no_such_command"},
    {"id": "py-3", "name": "prepare_restart", "args": {}},
    {"id": "py-4", "name": "ping", "deadline": "2001-01-01T00:00:00Z"},
    {"id": "py-5", "name": "get_inventory"},
]


def validate(msg):
    kind = msg.get("type")
    if kind not in schemas:
        report["errors"].append(f"unknown type {kind!r}")
        return
    resolver = jsonschema.RefResolver.from_schema(schemas[kind], store=resolver_store)
    try:
        jsonschema.Draft202012Validator(schemas[kind], resolver=resolver).validate(msg)
    except jsonschema.ValidationError as e:
        report["errors"].append(f"{kind}: {e.message} at {list(e.absolute_path)}")


def envelope(kind, body, msg_id):
    import datetime
    ts = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    msg = {"v": 1, "type": kind, "id": msg_id, "ts": ts, "body": body}
    validate(msg)  # what we send must follow the schemas too
    return json.dumps(msg)


async def check_request(path, headers):
    if headers.get("Authorization") != f"Bearer {token}":
        return http.HTTPStatus.UNAUTHORIZED, [], b"bad token\n"
    return None


async def abuse(ws, connection):
    """First connection: garbage the agent must survive, a command that must still work,
    then a frame over its size limit (it must drop the connection). Second connection:
    half a frame, then the TCP connection closes."""
    if connection == 1:
        await ws.send("{not json")
        await ws.send(json.dumps({"v": 1, "type": "surprise", "id": "odd-1", "ts": "2026-01-01T00:00:00Z", "body": {}}))
        await ws.send(envelope("command", {"name": "ping"}, "abuse-ping"))
        # Broken commands: one whose id can be echoed (answered invalid), one whose id
        # cannot (over 256 characters: only counted).
        await ws.send(json.dumps({"v": 1, "type": "command", "id": "bad-body-1", "ts": "2026-01-01T00:00:00Z", "body": []}))
        await ws.send(json.dumps({"v": 1, "type": "command", "id": "L" * 300, "ts": "2026-01-01T00:00:00Z",
                                  "body": {"name": "ping"}}))
        await asyncio.sleep(0.3)
        await ws.send("x" * (2 * 1024 * 1024))
    elif connection == 2:
        ws.transport.write(b"\x81\x7e\x01\x00" + b'{"v":1,"type":"command"')
        await asyncio.sleep(0.05)
        ws.transport.close()
    else:
        done.set()


async def handler(ws, path=None):
    report["connections"] += 1
    connection = report["connections"]
    async for frame in ws:
        msg = json.loads(frame)
        validate(msg)
        kind = msg.get("type")
        report["types"][kind] = report["types"].get(kind, 0) + 1
        if kind == "hello" and args.abuse:
            report["hello"] = msg["body"]
            asyncio.ensure_future(abuse(ws, connection))
        elif kind == "hello":
            report["hello"] = msg["body"]
            for c in COMMANDS:
                body = {k: v for k, v in c.items() if k != "id"}
                await ws.send(envelope("command", body, c["id"]))
        elif kind == "heartbeat":
            report["heartbeat_bytes"].append(len(frame.encode()))
            await ws.send(envelope("ack", {"heartbeat": msg["id"]}, f"hb-ack-{msg['id']}"))
        elif kind in ("event", "result"):
            if kind == "result":
                report["results"][msg["body"]["command_id"]] = msg["body"]
            await ws.send(envelope("ack", {"seq": msg["seq"]}, f"ack-{msg['seq']}"))
            report["acked"] += 1
        if not args.abuse and report["types"].get("heartbeat", 0) >= args.heartbeats and len(report["results"]) == len(COMMANDS):
            done.set()
            return


async def main():
    async with websockets.serve(handler, "127.0.0.1", 0, subprotocols=["instanced.v1"],
                                process_request=check_request) as server:
        port = server.sockets[0].getsockname()[1]
        pathlib.Path(args.ports_file).write_text(f"{port}\n")
        try:
            await asyncio.wait_for(done.wait(), timeout=30)
        except asyncio.TimeoutError:
            report["errors"].append("timed out waiting for heartbeats and results")
    pathlib.Path(args.report).write_text(json.dumps(report, indent=1))


asyncio.run(main())
sys.exit(0)
