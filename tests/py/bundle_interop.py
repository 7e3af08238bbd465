#!/usr/bin/env python3
"""An independent implementation of the grexal bundle format, written from
docs/bundle-format.md alone, using only the `cryptography` package (>= 48, for hpke).

    bundle_interop.py keygen DIR
    bundle_interop.py seal --credentials F --sandbox-id ID --sandbox-pub F --platform-key F
                           --version N --issued-at T --expires-at T --out F
    bundle_interop.py open --bundle F --sandbox-key F --trusted F --sandbox-id ID --now T

`open` verifies in the documented order and prints one JSON line with the header fields
and the SHA-256 of the plaintext (never the plaintext); on refusal it prints the error
code on stderr and exits 1.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

MAGIC = b"GXB1"
FORMAT = 1
KEM_ID, KDF_ID, AEAD_ID = 0x0020, 0x0001, 0x0003
INFO_PREFIX = b"grexal-sidecar bundle v1\x00"
MAX_BUNDLE = 16 * 1024 * 1024
ID_RE = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
SKEW = 300
SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305)


class Refused(Exception):
    pass


def read_key(path, private):
    if private and os.stat(path).st_mode & 0o077:
        raise Refused("key_permissions")
    data = open(path, "rb").read()
    for end in (b"\r\n", b"\n"):
        if data.endswith(end):
            data = data[: -len(end)]
            break
    raw = base64.b64decode(data, validate=True)
    if len(raw) != 32:
        raise Refused("key_format")
    return raw


def write_key(path, raw, private):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64encode(raw) + b"\n")


def keygen(d):
    os.makedirs(d, exist_ok=True)
    sk = x25519.X25519PrivateKey.generate()
    write_key(os.path.join(d, "sandbox.key"), sk.private_bytes_raw(), True)
    write_key(os.path.join(d, "sandbox.pub"), sk.public_key().public_bytes_raw(), False)
    pk = ed25519.Ed25519PrivateKey.generate()
    write_key(os.path.join(d, "platform.key"), pk.private_bytes_raw(), True)
    write_key(os.path.join(d, "platform.pub"), pk.public_key().public_bytes_raw(), False)


def header_bytes(sandbox_id, version, issued_at, expires_at, recipient, signer):
    return (
        MAGIC
        + struct.pack(">BHHH", FORMAT, KEM_ID, KDF_ID, AEAD_ID)
        + struct.pack(">B", len(sandbox_id))
        + sandbox_id
        + struct.pack(">QQQ", version, issued_at, expires_at)
        + recipient
        + signer
    )


def seal(a):
    sandbox_id = a.sandbox_id.encode()
    assert ID_RE.match(sandbox_id) and a.issued_at <= a.expires_at
    recipient = read_key(a.sandbox_pub, False)
    signer = ed25519.Ed25519PrivateKey.from_private_bytes(read_key(a.platform_key, True))
    header = header_bytes(
        sandbox_id, a.version, a.issued_at, a.expires_at, recipient,
        signer.public_key().public_bytes_raw(),
    )
    plaintext = open(a.credentials, "rb").read()
    out = SUITE.encrypt(plaintext, x25519.X25519PublicKey.from_public_bytes(recipient), INFO_PREFIX + header)
    enc, ct = out[:32], out[32:]
    signed = header + enc + struct.pack(">I", len(ct)) + ct
    bundle = signed + signer.sign(signed)
    assert len(bundle) <= MAX_BUNDLE
    with open(a.out, "wb") as f:
        f.write(bundle)


def open_bundle(a):
    b = open(a.bundle, "rb").read()
    if len(b) > MAX_BUNDLE:
        raise Refused("bundle_oversized")
    if len(b) < 11:
        raise Refused("bundle_malformed")
    fmt, kem, kdf, aead = struct.unpack(">BHHH", b[4:11])
    if b[:4] != MAGIC or fmt != FORMAT or (kem, kdf, aead) != (KEM_ID, KDF_ID, AEAD_ID):
        raise Refused("bundle_unsupported")
    pos = 11

    def take(n):
        nonlocal pos
        if pos + n > len(b):
            raise Refused("bundle_malformed")
        pos += n
        return b[pos - n : pos]

    id_len = take(1)[0]
    sandbox_id = take(id_len)
    if not ID_RE.match(sandbox_id):
        raise Refused("bundle_malformed")
    version, issued_at, expires_at = struct.unpack(">QQQ", take(24))
    recipient = take(32)
    signer = take(32)
    header = b[:pos]
    enc = take(32)
    (n,) = struct.unpack(">I", take(4))
    if n < 16:
        raise Refused("bundle_malformed")
    ct = take(n)
    signed = b[:pos]
    sig = take(64)
    if pos != len(b) or issued_at > expires_at:
        raise Refused("bundle_malformed")

    trusted = []
    for line in open(a.trusted).read().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            trusted.append(base64.b64decode(line, validate=True))
    if sig == bytes(64) or signer not in trusted:
        raise Refused("bundle_untrusted")
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(signer).verify(sig, signed)
    except InvalidSignature:
        raise Refused("bundle_tampered")
    if sandbox_id != a.sandbox_id.encode():
        raise Refused("bundle_wrong_sandbox")
    sk = x25519.X25519PrivateKey.from_private_bytes(read_key(a.sandbox_key, True))
    if recipient != sk.public_key().public_bytes_raw():
        raise Refused("bundle_wrong_key")
    if a.now > expires_at:
        raise Refused("bundle_expired")
    if issued_at > a.now + SKEW:
        raise Refused("bundle_malformed")
    try:
        plaintext = SUITE.decrypt(enc + ct, sk, INFO_PREFIX + header)
    except Exception:
        raise Refused("bundle_tampered")
    print(json.dumps({
        "sandbox_id": sandbox_id.decode(),
        "version": version,
        "issued_at": issued_at,
        "expires_at": expires_at,
        "plaintext_sha256": hashlib.sha256(plaintext).hexdigest(),
        "plaintext_is_credentials": isinstance(json.loads(plaintext).get("connections"), dict),
    }))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen")
    k.add_argument("dir")
    s = sub.add_parser("seal")
    for name in ("--credentials", "--sandbox-id", "--sandbox-pub", "--platform-key", "--out"):
        s.add_argument(name, required=True)
    for name in ("--version", "--issued-at", "--expires-at"):
        s.add_argument(name, required=True, type=int)
    o = sub.add_parser("open")
    for name in ("--bundle", "--sandbox-key", "--trusted", "--sandbox-id"):
        o.add_argument(name, required=True)
    o.add_argument("--now", required=True, type=int)
    a = p.parse_args()
    try:
        {"keygen": lambda: keygen(a.dir), "seal": lambda: seal(a), "open": lambda: open_bundle(a)}[a.cmd]()
    except Refused as e:
        print(f"refused: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
