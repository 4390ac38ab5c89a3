"""An independent verifier of Planledger's checkpoints and proofs.

Written from the specifications, not from the service's code:

* RFC 9162 (Certificate Transparency 2.0), section 2.1.1 (leaf and node hashes), 2.1.3.2
  (verifying an inclusion proof) and 2.1.4.2 (verifying consistency between two tree heads);
* C2SP tlog-checkpoint and signed-note: the note text (origin, tree size, base64 root hash),
  a blank line, and signature lines "\u2014 <key name> base64(key id || signature)", the key id
  being SHA-256(key name || 0x0A || 0x01 || Ed25519 public key)[:4] and the Ed25519 signature
  covering the note text.

Input: one JSON document (a file path argument) with
    public_key   the log's Ed25519 public key, 64 hex digits
    checkpoints  signed checkpoints (text)
    inclusion    [{"checkpoint": i, "event": "<envelope JSON as stored>", "proof": {...}}]
    consistency  [{"old": i, "new": j, "proof": {...} or null}]
    export       [{"checkpoint": i, "file": "<path>", "rows": [n, ...]}]: rows (numbered from 1)
                 of an NDJSON export written with `planledger export --proof`, each line
                 {"event": <envelope JSON as stored, byte for byte>, "proof": {...}}, checked
                 like the inclusion items (the event's bytes are the text of the line between
                 `{"event":` and the end of that JSON value)
Proofs are as the service serves them: {"leaf_index", "tree_size", "inclusion_path"} and
{"tree_size_1", "tree_size_2", "consistency_path"}, hashes in base64.

Prints one JSON document: counts and a list of failures (each naming what did not match);
exits 1 if any check failed.
"""

import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SIGNATURE_MARK = "\u2014 "


class Failure(Exception):
    """A check that did not pass; the message names what did not match."""


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 2.1.1: MTH({d(0)}) = SHA-256(0x00 || d(0))."""
    return sha256(b"\x00" + entry)


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 2.1.1: SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""
    return sha256(b"\x01" + left + right)


def lsb(value: int) -> int:
    return value & 1


def verify_inclusion(leaf_index: int, tree_size: int, path: list, root: bytes, entry: bytes):
    """RFC 9162 2.1.3.2, step by step."""
    # 1. leaf_index must be inside the tree.
    if leaf_index >= tree_size:
        raise Failure(f"leaf_index {leaf_index} is not below tree_size {tree_size}")
    # 2. fn = leaf_index, sn = tree_size - 1.
    fn, sn = leaf_index, tree_size - 1
    # 3. r = the leaf's hash.
    r = leaf_hash(entry)
    # 4. For each p in inclusion_path:
    for p in path:
        # a. sn == 0 means the path is too long.
        if sn == 0:
            raise Failure("the inclusion path is longer than the tree is deep")
        # b.
        if lsb(fn) or fn == sn:
            r = node_hash(p, r)
            if not lsb(fn):
                while not lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        # c.
        fn >>= 1
        sn >>= 1
    # 5. sn must be 0 and r the root.
    if sn != 0:
        raise Failure("the inclusion path is shorter than the tree is deep")
    if r != root:
        raise Failure(
            f"the root computed from the leaf and the path ({b64(r)}) is not the checkpoint's root ({b64(root)})"
        )


def verify_consistency(first: int, second: int, path: list, first_hash: bytes, second_hash: bytes):
    """RFC 9162 2.1.4.2, step by step (equal sizes: equal roots, empty path)."""
    if first == 0 or first > second:
        raise Failure(f"tree sizes {first} to {second} cannot be proven consistent")
    if first == second:
        if path:
            raise Failure("a proof between equal sizes must be empty")
        if first_hash != second_hash:
            raise Failure(f"two roots of the tree of size {first}: {b64(first_hash)} and {b64(second_hash)}")
        return
    # 1. An empty path fails.
    if not path:
        raise Failure("the consistency path is empty")
    path = list(path)
    # 2. If first is an exact power of 2, prepend first_hash.
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    # 3. fn = first - 1, sn = second - 1.
    fn, sn = first - 1, second - 1
    # 4. While LSB(fn) is set, shift both right.
    while lsb(fn):
        fn >>= 1
        sn >>= 1
    # 5. fr = sr = the first value of the path.
    fr = sr = path[0]
    # 6. For each subsequent value c:
    for c in path[1:]:
        # a.
        if sn == 0:
            raise Failure("the consistency path is longer than the trees need")
        # b.
        if lsb(fn) or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not lsb(fn):
                while not lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        # c.
        fn >>= 1
        sn >>= 1
    # 7. fr must be first_hash, sr second_hash, and sn 0.
    if sn != 0:
        raise Failure("the consistency path is shorter than the trees need")
    if fr != first_hash:
        raise Failure(f"the proof gives {b64(fr)} as the root of size {first}, the older checkpoint says {b64(first_hash)}")
    if sr != second_hash:
        raise Failure(f"the proof gives {b64(sr)} as the root of size {second}, the newer checkpoint says {b64(second_hash)}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64_hash(text: str, what: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError as e:
        raise Failure(f"{what} is not base64: {e}") from e
    if len(data) != 32:
        raise Failure(f"{what} is {len(data)} bytes, not 32")
    return data


def open_checkpoint(text: str, public_key: bytes):
    """C2SP tlog-checkpoint over signed-note: (origin, size, root) if the log's key signed it."""
    split = text.rfind("\n\n")
    if split < 0:
        raise Failure("the checkpoint has no blank line before its signatures")
    note, signatures = text[: split + 1], text[split + 2 :]
    lines = note.split("\n")
    if len(lines) < 4:
        raise Failure("the checkpoint's note has fewer than three lines")
    origin, size_line, root_line = lines[0], lines[1], lines[2]
    if not size_line.isdigit() or str(int(size_line)) != size_line:
        raise Failure(f"tree size {size_line!r} is not a decimal number")
    root = unb64_hash(root_line, "the root hash")
    key_id = sha256(origin.encode() + b"\n" + b"\x01" + public_key)[:4]
    verifier = Ed25519PublicKey.from_public_bytes(public_key)
    for line in signatures.split("\n"):
        if not line.startswith(SIGNATURE_MARK):
            continue
        name, _, signature = line[len(SIGNATURE_MARK) :].partition(" ")
        try:
            raw = base64.b64decode(signature, validate=True)
        except ValueError:
            continue
        if name != origin or len(raw) != 68 or raw[:4] != key_id:
            continue
        try:
            verifier.verify(raw[4:], note.encode())
        except InvalidSignature as e:
            raise Failure(f"the signature of key {key_id.hex()} on the checkpoint of size {size_line} does not verify") from e
        return origin, int(size_line), root
    raise Failure(f"no signature of key {key_id.hex()} under the name {origin}")


EXPORT_LINE_PREFIX = '{"event":'


def export_row(path: str, lines: list, row: int, checkpoint: int) -> dict:
    """Row `row` of an NDJSON export with proofs as an inclusion item: the event's exact text
    is the JSON value after `{"event":`, found by decoding it in place."""
    if row < 1 or row > len(lines):
        raise Failure(f"{path} has no row {row}")
    line = lines[row - 1]
    if not line.startswith(EXPORT_LINE_PREFIX):
        raise Failure(f"row {row} of {path} does not start with {EXPORT_LINE_PREFIX}")
    try:
        _, end = json.JSONDecoder().raw_decode(line, len(EXPORT_LINE_PREFIX))
        whole = json.loads(line)
    except ValueError as e:
        raise Failure(f"row {row} of {path} is not JSON: {e}") from e
    event = line[len(EXPORT_LINE_PREFIX) : end]
    if json.loads(event) != whole["event"]:
        raise Failure(f"row {row} of {path}: the event text found is not the line's event")
    return {"checkpoint": checkpoint, "event": event, "proof": whole["proof"]}


def export_items(bundle: dict, failures: list) -> list:
    items = []
    for export in bundle.get("export", []):
        path = export["file"]
        with open(path, encoding="utf-8") as file:
            lines = file.read().split("\n")
        for row in export["rows"]:
            try:
                items.append(export_row(path, lines, row, export["checkpoint"]))
            except Failure as e:
                failures.append(str(e))
    return items


def check(bundle: dict) -> dict:
    public_key = bytes.fromhex(bundle["public_key"])
    failures = []
    heads = []
    for index, text in enumerate(bundle["checkpoints"]):
        try:
            heads.append(open_checkpoint(text, public_key))
        except Failure as e:
            heads.append(None)
            failures.append(f"checkpoint {index}: {e}")
    inclusion = 0
    for item in bundle.get("inclusion", []) + export_items(bundle, failures):
        head = heads[item["checkpoint"]]
        proof = item["proof"]
        event = item["event"].encode()
        position = json.loads(event)["position"]
        what = f"inclusion of position {position} in tree size {proof['tree_size']}"
        try:
            if head is None:
                raise Failure("its checkpoint did not verify")
            origin, size, root = head
            if proof["tree_size"] != size or proof.get("origin", origin) != origin:
                raise Failure(f"the proof is for tree size {proof['tree_size']}, the checkpoint for {size}")
            if proof["leaf_index"] != position - 1:
                raise Failure(f"the proof is for leaf {proof['leaf_index']}, the event is at position {position}")
            path = [unb64_hash(h, "an inclusion path hash") for h in proof["inclusion_path"]]
            verify_inclusion(proof["leaf_index"], size, path, root, event)
            inclusion += 1
        except Failure as e:
            failures.append(f"{what}: {e}")
    consistency = 0
    for item in bundle.get("consistency", []):
        old, new = heads[item["old"]], heads[item["new"]]
        proof = item.get("proof") or {"consistency_path": []}
        try:
            if old is None or new is None:
                raise Failure("a checkpoint did not verify")
            if old[0] != new[0]:
                raise Failure(f"the checkpoints are of two logs, {old[0]} and {new[0]}")
            if "tree_size_1" in proof and (proof["tree_size_1"], proof["tree_size_2"]) != (old[1], new[1]):
                raise Failure("the proof is for other tree sizes than the checkpoints")
            path = [unb64_hash(h, "a consistency path hash") for h in proof["consistency_path"]]
            verify_consistency(old[1], new[1], path, old[2], new[2])
            consistency += 1
        except Failure as e:
            failures.append(f"consistency from {old and old[1]} to {new and new[1]}: {e}")
    return {
        "checkpoints": sum(1 for h in heads if h is not None),
        "inclusion": inclusion,
        "consistency": consistency,
        "failures": failures,
    }


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: verify_proofs.py BUNDLE.json", file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as file:
        bundle = json.load(file)
    summary = check(bundle)
    print(json.dumps(summary))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
