#!/usr/bin/env python3
"""Interoperability of TrustStack credentials with PyJWT (EdDSA / Ed25519).

  interop.py verify --jwks JWKS --token FILE --issuer ISS --audience AUD
      Verifies a TrustStack-issued token against the issuer's JWKS with PyJWT and prints
      {"header": ..., "claims": ...} as JSON. Exits 1 if PyJWT rejects it.

  interop.py sign --key PEM --kid KID --claims FILE
      Signs the JSON claims in FILE with the issuer's PKCS#8 PEM private key via PyJWT
      (alg EdDSA, the given kid) and prints the token.

Exits 3 when PyJWT or cryptography is missing (bash scripts/install-peers.sh installs them).
"""

import argparse
import json
import sys

try:
    import jwt
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
except ImportError as e:  # pragma: no cover - reported to the Rust test
    print(f"interop.py needs PyJWT and cryptography: {e}", file=sys.stderr)
    sys.exit(3)


def verify(args):
    with open(args.jwks) as f:
        jwks = jwt.PyJWKSet.from_dict(json.load(f))
    with open(args.token) as f:
        token = f.read().strip()
    header = jwt.get_unverified_header(token)
    key = next((k for k in jwks.keys if k.key_id == header.get("kid")), None)
    if key is None:
        print(f"no JWKS key has kid {header.get('kid')!r}", file=sys.stderr)
        return 1
    try:
        claims = jwt.decode(
            token,
            key=key.key,
            algorithms=["EdDSA"],
            audience=args.audience,
            issuer=args.issuer,
            options={"require": ["exp", "iat", "nbf", "iss", "sub", "aud", "jti"]},
        )
    except jwt.PyJWTError as e:
        print(f"PyJWT rejected the token: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"header": header, "claims": claims}))
    return 0


def sign(args):
    with open(args.key, "rb") as f:
        key = load_pem_private_key(f.read(), password=None)
    with open(args.claims) as f:
        claims = json.load(f)
    print(jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": args.kid}))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify")
    v.add_argument("--jwks", required=True)
    v.add_argument("--token", required=True)
    v.add_argument("--issuer", required=True)
    v.add_argument("--audience", required=True)
    s = sub.add_parser("sign")
    s.add_argument("--key", required=True)
    s.add_argument("--kid", required=True)
    s.add_argument("--claims", required=True)
    args = parser.parse_args()
    return verify(args) if args.command == "verify" else sign(args)


if __name__ == "__main__":
    sys.exit(main())
