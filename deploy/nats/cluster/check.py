#!/usr/bin/env python3
"""Loopback check of the 3-node JetStream cluster in this directory (n1.conf, n2.conf, n3.conf).

It starts the three servers on 127.0.0.1 with fresh store directories, waits for the routes and
the JetStream meta group, creates an R3 file stream and then checks that no acknowledged message is
lost or duplicated while members die:

  1. publish N messages (each acknowledged, each with a Nats-Msg-Id);
  2. SIGKILL the stream leader, publish N more (retrying each with the same Nats-Msg-Id until it is
     acknowledged), restart the killed member and wait until every replica holds all 2N;
  3. republish the first message: JetStream must answer "duplicate" and store nothing;
  4. publish N more, SIGKILL all three servers at once, restart them and read every message back
     by sequence: 3N messages, in order, none missing, none twice.

Usage (from the repository root; needs nats-server, tested with 2.15, and the nats-py package):

    .tools/bin/python deploy/nats/cluster/check.py --nats-server .tools/bin/nats-server

The configurations are used as they are, except that store_dir points into a temporary directory
(and, with --port-offset K, every port is shifted by K so a second copy can run beside a cluster
already using 4222-4224). Every server it started is killed and the temporary directory removed
on exit, whether the check passed, failed or was interrupted. Exit status 0 means every check
passed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
NODES = ("n1", "n2", "n3")
BASE_PORTS = {"client": 4222, "cluster": 6222, "http": 8222}
STREAM = "PLANLEDGER_CLUSTER_CHECK"
SUBJECT = "plcheck.evt"


class CheckFailed(Exception):
    """A check did not hold."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def ensure(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def _load_prctl():
    """Linux prctl, loaded up front so the child only has to call it (no imports after fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    """Runs in the child before exec: the server gets SIGKILL if this script dies hard."""
    _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Node:
    """One nats-server started from a copy of nX.conf."""

    def __init__(self, name: str, index: int, work: Path, binary: str, offset: int):
        self.name = name
        self.binary = binary
        self.client_port = BASE_PORTS["client"] + index + offset
        self.cluster_port = BASE_PORTS["cluster"] + index + offset
        self.http_port = BASE_PORTS["http"] + index + offset
        self.store = work / name / "store"
        self.conf = work / name / f"{name}.conf"
        self.log_path = work / name / "server.log"
        self.proc: subprocess.Popen | None = None
        self.started: list[subprocess.Popen] = []
        self.store.mkdir(parents=True)
        self.conf.write_text(self._rewrite((HERE / f"{name}.conf").read_text(), offset))

    def _rewrite(self, text: str, offset: int) -> str:
        text, count = re.subn(
            r'store_dir:\s*"[^"]*"', f"store_dir: {json.dumps(str(self.store))}", text
        )
        if count != 1:
            raise CheckFailed(f"{self.name}.conf: expected one quoted store_dir, found {count}")
        if offset:
            ports = "|".join(str(BASE_PORTS[k] + i) for k in BASE_PORTS for i in range(3))
            text = re.sub(rf"\b({ports})\b", lambda m: str(int(m.group(1)) + offset), text)
        return text

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def start(self) -> None:
        log_file = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if _PRCTL is not None else None,
            )
        finally:
            log_file.close()
        self.started.append(self.proc)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; only what is already on disk survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def monitor(self, path: str) -> dict:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:  # /healthz answers 503 with a JSON body
            return json.loads(error.read() or b"{}")

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Cluster:
    def __init__(self, binary: str, offset: int, work: Path):
        self.nodes = [Node(name, i, work, binary, offset) for i, name in enumerate(NODES)]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def stop_all(self) -> None:
        """Kills every process this script started (SIGTERM, then SIGKILL after 5 s)."""
        procs = [p for n in self.nodes for p in n.started if p.poll() is None]
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + 5
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for node in self.nodes:
            node.proc = None

    async def wait_formed(self, timeout: float = 60) -> None:
        """Every node runs, is routed to the other two, and agrees on a JetStream meta leader."""
        deadline = time.monotonic() + timeout
        last = "nothing checked yet"
        while time.monotonic() < deadline:
            try:
                last = self._formed()
                if last == "":
                    return
            except (OSError, ValueError) as error:
                last = f"monitoring not answering: {error}"
            await asyncio.sleep(0.25)
        raise CheckFailed(f"cluster did not form within {timeout:.0f}s: {last}")

    def _formed(self) -> str:
        leaders = set()
        for node in self.nodes:
            if not node.running():
                return f"{node.name} is not running (exit code {node.proc and node.proc.poll()})"
            peers = {r.get("remote_name") for r in node.monitor("/routez").get("routes") or []}
            others = {n.name for n in self.nodes if n is not node}
            if not others <= peers:
                return f"{node.name} routes to {sorted(p for p in peers if p)}, not {sorted(others)}"
            meta = node.monitor("/jsz").get("meta_cluster") or {}
            if not meta.get("leader") or meta.get("cluster_size") != 3:
                return f"{node.name} meta group: {meta}"
            leaders.add(meta["leader"])
            health = node.monitor("/healthz")
            if health.get("status") != "ok":
                return f"{node.name} /healthz: {health}"
        if len(leaders) != 1:
            return f"nodes disagree on the meta leader: {sorted(leaders)}"
        return ""

    def replica_states(self) -> dict[str, dict]:
        """The stream's state as each running server holds it (its own replica)."""
        states = {}
        for node in self.nodes:
            if not node.running():
                continue
            jsz = node.monitor("/jsz?accounts=true&streams=true")
            for account in jsz.get("account_details") or []:
                for stream in account.get("stream_detail") or []:
                    if stream.get("name") == STREAM:
                        states[node.name] = stream.get("state") or {}
        return states

    async def wait_replicas(self, messages: int, timeout: float = 60) -> dict[str, dict]:
        """Every server's replica holds `messages` messages, sequences 1..messages."""
        deadline = time.monotonic() + timeout
        states: dict[str, dict] = {}
        while time.monotonic() < deadline:
            try:
                states = self.replica_states()
            except (OSError, ValueError):
                states = {}
            if len(states) == 3 and all(
                s.get("messages") == messages
                and s.get("first_seq") == 1
                and s.get("last_seq") == messages
                for s in states.values()
            ):
                return states
            await asyncio.sleep(0.25)
        raise CheckFailed(f"replicas did not converge on {messages} messages: {states}")


async def connect(cluster: Cluster):
    import nats

    async def quiet(*_args):  # reconnects are expected here; failures surface as exceptions
        return None

    nc = await nats.connect(
        servers=[n.url for n in cluster.nodes],
        name="planledger-cluster-check",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        connect_timeout=2,
        error_cb=quiet,
        disconnected_cb=quiet,
        reconnected_cb=quiet,
    )
    return nc, nc.jetstream(timeout=2)


def msg_id(i: int) -> str:
    return f"m-{i:06d}"


async def publish_acked(js, i: int, retry_for: float) -> tuple[object, int]:
    """Publishes message i until JetStream acknowledges it; returns (ack, failed attempts)."""
    deadline = time.monotonic() + retry_for
    failures = 0
    while True:
        try:
            ack = await js.publish(
                SUBJECT,
                json.dumps({"i": i}).encode(),
                headers={"Nats-Msg-Id": msg_id(i)},
            )
            return ack, failures
        except asyncio.CancelledError:
            raise
        except Exception as error:  # no responders, timeout, 503 while a leader is elected
            failures += 1
            if time.monotonic() > deadline:
                raise CheckFailed(f"message {i} not acknowledged within {retry_for}s: {error!r}") from error
            await asyncio.sleep(0.1)


async def publish_range(js, first: int, last: int, retry_for: float) -> int:
    """Publishes first..last (inclusive); each ack must carry sequence i. Returns failed attempts."""
    failures = 0
    for i in range(first, last + 1):
        ack, failed = await publish_acked(js, i, retry_for)
        failures += failed
        ensure(ack.stream == STREAM, f"message {i} acknowledged by stream {ack.stream}")
        ensure(ack.seq == i, f"message {i} acknowledged with sequence {ack.seq}, expected {i}")
    return failures


async def stream_info(js, retry_for: float = 30):
    deadline = time.monotonic() + retry_for
    while True:
        try:
            info = await js.stream_info(STREAM)
            if info.cluster and info.cluster.leader:
                return info
        except asyncio.CancelledError:
            raise
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise CheckFailed(f"stream {STREAM} has no leader after {retry_for}s")
        await asyncio.sleep(0.25)


async def wait_replicas_current(js, timeout: float = 60):
    deadline = time.monotonic() + timeout
    info = None
    while time.monotonic() < deadline:
        info = await stream_info(js)
        replicas = info.cluster.replicas or []
        if len(replicas) == 2 and all(r.current and not r.offline for r in replicas):
            return info
        await asyncio.sleep(0.25)
    raise CheckFailed(f"stream replicas not current within {timeout}s: {info and info.cluster}")


async def scenario(cluster: Cluster, n: int) -> dict:
    results: dict = {}

    log("starting n1, n2, n3")
    started = time.monotonic()
    for node in cluster.nodes:
        node.start()
    await cluster.wait_formed()
    results["formed_seconds"] = round(time.monotonic() - started, 2)
    meta = cluster.nodes[0].monitor("/jsz")["meta_cluster"]
    varz = cluster.nodes[0].monitor("/varz")
    log(
        f"cluster {varz.get('cluster', {}).get('name')!r} formed in {results['formed_seconds']}s: "
        f"3 servers routed to each other, meta leader {meta['leader']}"
    )
    for node in cluster.nodes:
        js_config = node.monitor("/varz").get("jetstream", {}).get("config", {})
        ensure(
            js_config.get("sync_always") is True,
            f"{node.name}: sync_interval: always is not in effect (varz jetstream.config: {js_config})",
        )
    log("every server runs with sync_interval: always (varz jetstream.config.sync_always)")

    from nats.js.api import StorageType

    nc, js = await connect(cluster)
    try:
        info = await js.add_stream(
            name=STREAM,
            subjects=[f"{SUBJECT}"],
            storage=StorageType.FILE,
            num_replicas=3,
            duplicate_window=120,
        )
        ensure(info.config.num_replicas == 3, f"stream created with {info.config.num_replicas} replicas")
        info = await wait_replicas_current(js)
        peers = sorted([info.cluster.leader] + [r.name for r in info.cluster.replicas])
        ensure(peers == list(NODES), f"stream peers {peers}")
        log(f"stream {STREAM}: R3, file storage, leader {info.cluster.leader}, peers {peers}")

        # Phase 1: all members up.
        t = time.monotonic()
        failures = await publish_range(js, 1, n, retry_for=10)
        ensure(failures == 0, f"{failures} publishes failed with all three servers up")
        log(f"phase 1: {n} messages published and acknowledged (seq 1..{n}) "
            f"in {time.monotonic() - t:.2f}s")

        # Phase 2: SIGKILL the stream leader, keep publishing, restart it.
        leader = cluster.node(info.cluster.leader)
        leader.kill()
        killed_at = time.monotonic()
        log(f"phase 2: SIGKILLed the stream leader {leader.name}; publishing {n} more")
        failures = await publish_range(js, n + 1, 2 * n, retry_for=30)
        info = await stream_info(js)
        results["leader_killed"] = leader.name
        results["new_leader"] = info.cluster.leader
        results["failed_attempts_during_failover"] = failures
        ensure(info.cluster.leader != leader.name, "the killed server is still reported as leader")
        ensure(info.state.messages == 2 * n, f"stream holds {info.state.messages}, expected {2 * n}")
        log(f"phase 2: seq {n + 1}..{2 * n} acknowledged with 2 of 3 up "
            f"({failures} attempts failed during the leader election and were retried); "
            f"new leader {info.cluster.leader}, {time.monotonic() - killed_at:.2f}s after the kill")
        leader.start()
        await cluster.wait_formed()
        info = await wait_replicas_current(js)
        states = await cluster.wait_replicas(2 * n)
        log(f"phase 2: {leader.name} restarted on its store and caught up; every replica holds "
            + ", ".join(f"{k}={v['messages']} (seq {v['first_seq']}..{v['last_seq']})"
                        for k, v in sorted(states.items())))

        # Phase 3: Nats-Msg-Id dedupe across the failover.
        ack, _ = await publish_acked(js, 1, retry_for=10)
        ensure(ack.duplicate is True and ack.seq == 1,
               f"republished {msg_id(1)}: duplicate={ack.duplicate} seq={ack.seq}")
        info = await stream_info(js)
        ensure(info.state.messages == 2 * n, f"after the duplicate: {info.state.messages} messages")
        log(f"phase 3: republished {msg_id(1)} -> duplicate=True seq=1; still {2 * n} messages")

        # Phase 4: publish, then SIGKILL every server at once and restart them.
        failures = await publish_range(js, 2 * n + 1, 3 * n, retry_for=10)
        ensure(failures == 0, f"{failures} publishes failed with all three servers up")
    finally:
        await nc.close()
    for node in cluster.nodes:
        node.kill()
    log(f"phase 4: seq {2 * n + 1}..{3 * n} acknowledged, then SIGKILLed all three servers")
    for node in cluster.nodes:
        node.start()
    await cluster.wait_formed()
    nc, js = await connect(cluster)
    try:
        info = await wait_replicas_current(js)
        states = await cluster.wait_replicas(3 * n)
        ensure(info.state.messages == 3 * n and info.state.last_seq == 3 * n,
               f"after the restart: {info.state.messages} messages, last seq {info.state.last_seq}")
        for seq in range(1, 3 * n + 1):
            msg = await js.get_msg(STREAM, seq)
            got = (msg.headers or {}).get("Nats-Msg-Id")
            ensure(got == msg_id(seq), f"seq {seq} holds {got}, expected {msg_id(seq)}")
            ensure(json.loads(msg.data) == {"i": seq}, f"seq {seq} holds {msg.data!r}")
        log(f"phase 4: after restarting all three: {info.state.messages} messages, "
            f"seq 1..{info.state.last_seq}, leader {info.cluster.leader}; all {3 * n} read back "
            "by sequence with the right Nats-Msg-Id and body; replicas "
            + ", ".join(f"{k}={v['messages']}" for k, v in sorted(states.items())))
        results["final_messages"] = info.state.messages
        results["final_last_seq"] = info.state.last_seq
        results["replica_messages"] = {k: v["messages"] for k, v in sorted(states.items())}
    finally:
        await nc.close()
    return results


def ports_free(cluster: Cluster) -> None:
    for node in cluster.nodes:
        for port in (node.client_port, node.cluster_port, node.http_port):
            with socket.socket() as sock:
                # Like nats-server itself: a socket in TIME_WAIT from an earlier run is no conflict.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    raise CheckFailed(
                        f"port {port} on 127.0.0.1 is in use; stop what uses it or pass "
                        "--port-offset (e.g. --port-offset 10000)"
                    ) from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--nats-server",
        default=os.environ.get("PLANLEDGER_NATS_SERVER") or shutil.which("nats-server") or "nats-server",
        help="nats-server binary (default: $PLANLEDGER_NATS_SERVER, else nats-server on PATH)",
    )
    parser.add_argument("--messages", type=int, default=200, help="messages per phase (default 200)")
    parser.add_argument("--port-offset", type=int, default=0,
                        help="shift every port of n1..n3.conf by this much (default 0)")
    args = parser.parse_args()
    if args.messages < 1:
        parser.error("--messages must be at least 1")
    try:
        import nats  # noqa: F401
    except ImportError:
        print("check.py needs nats-py: pip install 'nats-py>=2.9,<3'", file=sys.stderr)
        return 2
    try:
        version = subprocess.run([args.nats_server, "--version"], capture_output=True, text=True)
    except OSError as error:
        print(f"cannot run nats-server {args.nats_server!r}: {error}", file=sys.stderr)
        return 2
    log(f"using {version.stdout.strip() or args.nats_server}")

    # SIGTERM (and SIGHUP) unwind like Ctrl-C, so the finally block below always runs.
    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)

    work = Path(tempfile.mkdtemp(prefix="planledger-nats-cluster-"))
    cluster = None
    try:
        cluster = Cluster(args.nats_server, args.port_offset, work)
        ports_free(cluster)
        results = asyncio.run(scenario(cluster, args.messages))
        print(json.dumps({"ok": True, "messages_per_phase": args.messages, **results}, indent=2))
        log("PASS")
        return 0
    except Exception as error:
        log(f"FAIL: {error}")
        if cluster is not None:
            for node in cluster.nodes:
                if node.started:
                    print(f"--- {node.name} log (last lines) ---\n{node.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if cluster is not None:
            cluster.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
