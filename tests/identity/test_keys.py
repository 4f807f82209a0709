"""Agent identity: Ed25519 keys, did:key, signing inside the kernel, keys sealed at rest."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import VerifyKey
from sqlalchemy import select

from kernel.helpers import make_agent, make_org
from underlay import errors
from underlay.identity import keys
from underlay.kernel.kernel import Kernel
from underlay.storage import schema


def test_did_key_round_trips_and_matches_the_w3c_form() -> None:
    pair = keys.KeyPair.generate()
    assert pair.did.startswith("did:key:z6Mk")  # the Ed25519 multicodec prefix in base58btc
    assert keys.public_key_from_did(pair.did) == pair.public_key
    signature = pair.sign(b"hello")
    assert keys.verify(keys.public_key_from_did(pair.did), b"hello", signature)
    assert not keys.verify(pair.public_key, b"hellO", signature)


def test_a_known_did_key_vector() -> None:
    """An Ed25519 example DID from the W3C CCG did:key spec decodes and re-encodes."""
    did = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
    public = keys.public_key_from_did(did)
    assert len(public) == 32
    assert keys.did_from_public_key(public) == did


@pytest.mark.parametrize(
    "did",
    ["did:web:example.com", "did:key:z0OIl", "did:key:z" + "1" * 10,
     "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"],  # a secp256k1 did:key
)
def test_malformed_or_foreign_dids_are_invalid_input(did: str) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        keys.public_key_from_did(did)
    assert caught.value.field == "did"


async def test_sign_and_verify_through_the_kernel(kernel: Kernel) -> None:
    alice = await make_agent(kernel, "alice")
    bob = await make_agent(kernel, "bob")
    sig: Any = await kernel.invoke("keys.sign", {"message": "pay bob 5"}, token=alice.token)
    assert sig.did == alice.did
    ok: Any = await kernel.invoke(
        "keys.verify", {"did": alice.did, "message": "pay bob 5", "signature": sig.signature},
        token=bob.token,
    )
    assert ok.valid
    tampered: Any = await kernel.invoke(
        "keys.verify", {"did": alice.did, "message": "pay bob 500", "signature": sig.signature},
        token=bob.token,
    )
    assert not tampered.valid
    wrong_key: Any = await kernel.invoke(
        "keys.verify", {"did": bob.did, "message": "pay bob 5", "signature": sig.signature},
        token=bob.token,
    )
    assert not wrong_key.valid
    # anyone can check it without underlay: the DID alone carries the public key
    VerifyKey(keys.public_key_from_did(sig.did)).verify(
        b"pay bob 5", base64.b64decode(sig.signature)
    )


async def test_binary_messages_are_signed_as_base64(kernel: Kernel) -> None:
    alice = await make_agent(kernel, "alice")
    raw = bytes(range(256))
    message = base64.b64encode(raw).decode()
    sig: Any = await kernel.invoke(
        "keys.sign", {"message": message, "encoding": "base64"}, token=alice.token
    )
    assert keys.verify(keys.public_key_from_did(str(alice.did)), raw,
                       base64.b64decode(sig.signature))
    res: Any = await kernel.invoke(
        "keys.verify",
        {"did": alice.did, "message": message, "signature": sig.signature, "encoding": "base64"},
        token=alice.token,
    )
    assert res.valid
    with pytest.raises(errors.InvalidInput) as caught:
        await kernel.invoke(
            "keys.sign", {"message": "not base64!", "encoding": "base64"}, token=alice.token
        )
    assert caught.value.field == "message"


async def test_signatures_verify_across_orgs(kernel: Kernel) -> None:
    alice = await make_agent(kernel, "alice")
    other = await make_org(kernel, "other")
    sig: Any = await kernel.invoke("keys.sign", {"message": "hi"}, token=alice.token)
    res: Any = await kernel.invoke(
        "keys.verify", {"did": alice.did, "message": "hi", "signature": sig.signature},
        token=other.token,
    )
    assert res.valid


async def test_only_agents_sign(kernel: Kernel) -> None:
    with pytest.raises(errors.PermissionDenied):
        await kernel.invoke("keys.sign", {"message": "x"}, token=kernel.admin_token())


async def test_the_agent_record_carries_its_public_key_and_a_sealed_private_key(
    kernel: Kernel,
) -> None:
    alice = await make_agent(kernel, "alice")
    agent: Any = await kernel.invoke("agents.get", {"agent": "alice"}, token=kernel.admin_token())
    assert base64.b64decode(agent.public_key) == keys.public_key_from_did(agent.did)
    async with kernel.db.read() as conn:
        sealed = (
            await conn.execute(
                select(schema.agents.c.private_key_sealed).where(schema.agents.c.id == alice.id)
            )
        ).scalar_one()
    pair = kernel.sealer.keypair(sealed)
    assert pair.did == alice.did
    assert base64.b64encode(pair.seed()).decode() not in sealed
    with pytest.raises(errors.InternalError):  # another installation's master key opens nothing
        keys.Sealer(b"\x01" * 32).open(sealed)


def test_the_master_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = keys.load_master_key(tmp_path)
    assert len(first) == 32
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600
    assert keys.load_master_key(tmp_path) == first
    override = base64.b64encode(b"\x02" * 32).decode()
    assert keys.load_master_key(tmp_path, override) == b"\x02" * 32
    with pytest.raises(errors.InvalidInput):
        keys.Sealer(b"short")
