#!/usr/bin/env python3
"""An independent verifier for TrustStack ledger proofs, written from the specs alone.

It shares no code with the Rust ledger: it uses hashlib, base64 and the PyPI `cryptography`
package, and checks
  1. the verifier key <name>+<hex8 key id>+<base64(0x01 || Ed25519 public key)>, recomputing the
     key id = SHA-256(name || 0x0A || 0x01 || public key)[:4]   (c2sp.org/signed-note);
  2. the checkpoint's signed-note signature by that key, and its three-line body
     origin / tree size / base64 root                           (c2sp.org/tlog-checkpoint);
  3. the entry's leaf hash SHA-256(0x00 || record bytes) and its inclusion proof against the
     checkpoint root                                            (RFC 9162 section 2.1.3.2).

Usage: independent_verifier.py INPUT.json, where INPUT.json is
  {"verifier_key": "...", "checkpoint": "<signed note>", "record": "<canonical JSON>",
   "proof": {"leaf_index": i, "tree_size": n, "path": ["<base64>", ...]}}
Exit status: 0 verified, 1 verification failed, 2 cannot run (missing `cryptography`).
"""

import base64
import hashlib
import json
import sys

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError:
    print("independent_verifier: the Python package `cryptography` is not installed "
          "(bash scripts/install-peers.sh installs it)", file=sys.stderr)
    sys.exit(2)


class Failed(Exception):
    pass


def parse_verifier_key(vkey):
    parts = vkey.split("+", 2)
    if len(parts) != 3 or len(parts[1]) != 8:
        raise Failed("malformed verifier key")
    name, key_id, key = parts[0], bytes.fromhex(parts[1]), base64.b64decode(parts[2], validate=True)
    if len(key) != 33 or key[0] != 0x01:
        raise Failed("verifier key is not an Ed25519 key")
    expected = hashlib.sha256(name.encode() + b"\n" + key).digest()[:4]
    if key_id != expected:
        raise Failed("verifier key id %s does not match the key (%s)" % (key_id.hex(), expected.hex()))
    return name, key_id, key[1:]


def open_note(note, name, key_id, public_key):
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise Failed("malformed note")
    text, sigs = note[: split + 1], note[split + 2 :]
    for line in sigs.splitlines():
        if not line.startswith("\u2014 "):
            raise Failed("malformed signature line")
        sig_name, _, b64 = line[2:].partition(" ")
        sig = base64.b64decode(b64, validate=True)
        if sig_name != name or sig[:4] != key_id:
            continue  # a signature by another key: ignored, as the spec requires
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(sig[4:], text.encode())
        except InvalidSignature:
            raise Failed("bad checkpoint signature")
        return text
    raise Failed("checkpoint is not signed by %s+%s" % (name, key_id.hex()))


def parse_checkpoint(text, origin):
    lines = text.split("\n")
    if len(lines) != 4 or lines[3] != "":
        raise Failed("checkpoint body is not three lines")
    if lines[0] != origin:
        raise Failed("checkpoint origin %r is not the key name %r" % (lines[0], origin))
    if not lines[1].isdigit() or (lines[1] != "0" and lines[1].startswith("0")):
        raise Failed("bad tree size")
    root = base64.b64decode(lines[2], validate=True)
    if len(root) != 32:
        raise Failed("root is not 32 bytes")
    return int(lines[1]), root


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion_proof(index, size, leaf, path):
    # RFC 9162, section 2.1.3.2.
    if index >= size:
        raise Failed("leaf index beyond tree size")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise Failed("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node(p, r)
            while fn != 0 and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Failed("inclusion proof too short")
    return r


def verify(doc):
    name, key_id, public_key = parse_verifier_key(doc["verifier_key"])
    text = open_note(doc["checkpoint"], name, key_id, public_key)
    size, root = parse_checkpoint(text, name)
    proof = doc["proof"]
    if proof["tree_size"] != size:
        raise Failed("proof is for tree size %d, checkpoint for %d" % (proof["tree_size"], size))
    leaf = hashlib.sha256(b"\x00" + doc["record"].encode()).digest()
    path = [base64.b64decode(h, validate=True) for h in proof["path"]]
    if root_from_inclusion_proof(proof["leaf_index"], size, leaf, path) != root:
        raise Failed("inclusion proof does not lead to the checkpoint root")
    return "ok: entry %d is in %s at size %d" % (proof["leaf_index"], name, size)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = json.load(f)
    try:
        print(verify(doc))
    except (Failed, ValueError, KeyError) as e:
        print("FAILED: %s" % e)
        sys.exit(1)


if __name__ == "__main__":
    main()
