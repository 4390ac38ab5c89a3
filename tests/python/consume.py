#!/usr/bin/env python3
"""Reads the whole Planledger event stream with nats-py and protobuf code generated from proto/.

This is the cross-language check of the wire contract: nothing here comes from the Rust code.
The bindings are generated into a temporary directory with grpcio-tools
(`python -m grpc_tools.protoc`), every message of the stream is fetched with an ephemeral pull
consumer and decoded as `planledger.v1.EventEnvelope`, and a JSON summary is printed on stdout:

    {"count": N, "records": [[position, type, event_id, tenant, plan_id, version, subject], ...],
     "types": {"GoalDefined": 3, ...}, "problems": ["...", ...]}

`problems` lists every message that breaks the contract (a header that disagrees with the body,
a subject that does not match, data that is not JSON, positions out of order).

Usage: consume.py --url nats://127.0.0.1:4222 --proto-dir proto [--stream PLANLEDGER_EVENTS]
                  [--expect N] [--timeout 30]
"""

import argparse
import asyncio
import importlib
import json
import os
import sys
import tempfile
from collections import Counter


def generate_bindings(proto_dir: str, out_dir: str) -> None:
    """Runs protoc (bundled with grpcio-tools) on proto/planledger/v1/*.proto."""
    from grpc_tools import protoc
    import grpc_tools

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = sorted(
        os.path.join("planledger", "v1", name)
        for name in os.listdir(os.path.join(proto_dir, "planledger", "v1"))
        if name.endswith(".proto")
    )
    status = protoc.main(
        ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out_dir}"]
        + files
    )
    if status != 0:
        raise SystemExit(f"protoc failed with status {status} on {files}")


def encode_token(value: str) -> str:
    """The subject token encoding of docs/integration.md."""
    if value == "":
        return "_"
    if value == "_":
        return "%5F"
    out = []
    for byte in value.encode("utf-8"):
        char = chr(byte)
        if char.isascii() and (char.isalnum() or char in "-_"):
            out.append(char)
        else:
            out.append("%{:02X}".format(byte))
    return "".join(out)


async def consume(args, envelope_pb2) -> dict:
    import nats
    from nats.errors import TimeoutError as NatsTimeout

    nc = await nats.connect(args.url)
    js = nc.jetstream()
    info = await js.stream_info(args.stream)
    stored = info.state.messages
    wanted = args.expect if args.expect is not None else stored
    sub = await js.pull_subscribe("planledger.evt.>", stream=args.stream)

    records, problems, types = [], [], Counter()
    last_position = 0
    deadline = asyncio.get_running_loop().time() + args.timeout
    while len(records) < wanted and asyncio.get_running_loop().time() < deadline:
        try:
            batch = await sub.fetch(batch=min(256, wanted - len(records)), timeout=2)
        except NatsTimeout:
            continue
        for msg in batch:
            envelope = envelope_pb2.EventEnvelope()
            envelope.ParseFromString(msg.data)
            headers = msg.headers or {}
            position = envelope.position
            if headers.get("Planledger-Position") != str(position):
                problems.append(f"position {position}: header says {headers.get('Planledger-Position')!r}")
            if headers.get("Nats-Msg-Id") != envelope.event_id:
                problems.append(f"position {position}: Nats-Msg-Id is not the event id")
            if not headers.get("Content-Type", "").startswith("application/x-protobuf"):
                problems.append(f"position {position}: Content-Type {headers.get('Content-Type')!r}")
            if position <= last_position:
                problems.append(f"position {position} came after {last_position}")
            last_position = position
            expected_subject = "planledger.evt.{}.{}.{}".format(
                encode_token(envelope.tenant), encode_token(envelope.plan_id), encode_token(envelope.type)
            )
            if msg.subject != expected_subject:
                problems.append(f"position {position}: subject {msg.subject} != {expected_subject}")
            if envelope.stream != f"{envelope.tenant}/{envelope.plan_id}":
                problems.append(f"position {position}: stream {envelope.stream!r} != tenant/plan_id")
            try:
                json.loads(envelope.data.decode("utf-8"))
            except ValueError as error:
                problems.append(f"position {position}: data is not JSON: {error}")
            if not envelope.HasField("recorded_at") or not envelope.HasField("occurred_at"):
                problems.append(f"position {position}: a timestamp is missing")
            types[envelope.type] += 1
            records.append(
                [
                    position,
                    envelope.type,
                    envelope.event_id,
                    envelope.tenant,
                    envelope.plan_id,
                    envelope.version,
                    msg.subject,
                ]
            )
            await msg.ack()
    await nc.close()
    return {
        "count": len(records),
        "stream_messages": stored,
        "records": records,
        "types": dict(types),
        "problems": problems,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--stream", default="PLANLEDGER_EVENTS")
    parser.add_argument("--expect", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="planledger-proto-py-") as out_dir:
        generate_bindings(args.proto_dir, out_dir)
        sys.path.insert(0, out_dir)
        envelope_pb2 = importlib.import_module("planledger.v1.envelope_pb2")
        # The command messages must compile and import too: they are part of the contract.
        importlib.import_module("planledger.v1.commands_pb2")
        summary = asyncio.run(consume(args, envelope_pb2))
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
