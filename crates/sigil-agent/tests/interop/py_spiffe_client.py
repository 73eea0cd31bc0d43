"""Interop check: py-spiffe (PyPI `spiffe`) talks to a running Sigil agent.

Usage: python py_spiffe_client.py unix:///path/agent.sock <expected-spiffe-id> <audience>

Prints one JSON object per line; the Rust test (tests/agent.rs) reads them. After the first
X.509 stream update it prints {"step": "stream-ready"} and waits for the test to force a
rotation, then prints {"step": "stream-rotated"} when a fresh SVID arrives. Exits non-zero with
{"error": ...} on any failure.
"""

import json
import sys
import threading

from cryptography.hazmat.primitives import serialization
from spiffe import JwtSvid, TrustDomain, WorkloadApiClient


def out(**kw):
    print(json.dumps(kw), flush=True)


def main() -> int:
    endpoint, expected_id, audience = sys.argv[1], sys.argv[2], sys.argv[3]
    client = WorkloadApiClient(socket_path=endpoint, default_timeout=20)

    # X.509-SVID and bundles.
    svid = client.fetch_x509_svid()
    assert str(svid.spiffe_id) == expected_id, f"got {svid.spiffe_id}, want {expected_id}"
    td = svid.spiffe_id.trust_domain
    pub_from_key = svid.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pub_from_leaf = svid.leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert pub_from_key == pub_from_leaf, "private key does not match the leaf"
    bundles = client.fetch_x509_bundles()
    bundle = bundles.get_bundle_for_trust_domain(td)
    assert bundle is not None and bundle.x509_authorities, "no X.509 bundle for the trust domain"
    chain = svid.cert_chain
    for child, parent in zip(chain, chain[1:]):
        child.verify_directly_issued_by(parent)
    top = chain[-1]
    assert any(_issued_by(top, root) for root in bundle.x509_authorities), "chain does not reach a bundle root"
    ctx = client.fetch_x509_context()
    assert str(ctx.default_svid.spiffe_id) == expected_id
    out(step="x509", spiffe_id=str(svid.spiffe_id), chain_len=len(chain), serial=svid.leaf.serial_number)

    # JWT-SVID, JWT bundles, validation (by the agent and locally).
    jwt = client.fetch_jwt_svid(audience={audience})
    assert str(jwt.spiffe_id) == expected_id
    jwt_bundles = client.fetch_jwt_bundles()
    jb = jwt_bundles.get_bundle_for_trust_domain(td)
    assert jb is not None and jb.jwt_authorities, "no JWT bundle for the trust domain"
    local = JwtSvid.parse_and_validate(jwt.token, jb, {audience})
    assert str(local.spiffe_id) == expected_id
    validated = client.validate_jwt_svid(jwt.token, audience)
    assert str(validated.spiffe_id) == expected_id
    try:
        client.validate_jwt_svid(jwt.token, "someone-else")
        out(error="agent validated a JWT-SVID for the wrong audience")
        return 1
    except Exception:  # noqa: BLE001 - any error is the expected refusal
        pass
    out(step="jwt", spiffe_id=str(jwt.spiffe_id), audience=sorted(jwt.audience))

    # Stream: first snapshot at once, a fresh one after the test forces a rotation.
    serials = []
    got_first = threading.Event()
    got_second = threading.Event()
    errors = []

    def on_success(ctx):
        s = ctx.default_svid.leaf.serial_number
        if not serials:
            serials.append(s)
            got_first.set()
        elif s != serials[0] and not got_second.is_set():
            serials.append(s)
            got_second.set()

    def on_error(e):
        errors.append(str(e))

    handle = client.stream_x509_contexts(on_success, on_error)
    if not got_first.wait(20):
        out(error=f"no first stream message: {errors}")
        return 1
    out(step="stream-ready", serial=serials[0])
    ok = got_second.wait(30)
    handle.cancel()
    if not ok:
        out(error=f"no stream message after rotation: {errors}")
        return 1
    out(step="stream-rotated", serial=serials[1])
    client.close()
    return 0


def _issued_by(cert, root) -> bool:
    try:
        cert.verify_directly_issued_by(root)
        return True
    except Exception:  # noqa: BLE001
        return False


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001
        out(error=f"{type(e).__name__}: {e}")
        sys.exit(1)
