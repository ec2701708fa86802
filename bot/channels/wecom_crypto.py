"""WeCom callback crypto (shared by every encrypted door) with strict checks, and safe XML parsing.

wechatpy supplies the signature and the AES cipher; this module adds what it leaves out: strict base64,
PKCS#7 padding to 32-byte blocks checked byte by byte, length and receiveid checks, a replay window on
the timestamp, constant-time signature comparison, and XML parsing that refuses DTDs and entities.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import struct
import time
import xml.etree.ElementTree as ET  # noqa: S405 - only for the element type; parsing goes through defusedxml
from dataclasses import dataclass

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as safe_fromstring
from wechatpy.crypto.cryptography import WeChatCipher
from wechatpy.enterprise.crypto import PrpCrypto
from wechatpy.utils import WeChatSigner

BLOCK = 32  # WeCom pads to 32-byte blocks, not AES's 16


@dataclass
class Rejected(Exception):
    """A callback refused at the door: HTTP status and a reason for the log (never echoed to callers)."""

    status: int
    reason: str

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    """msg_signature = sha1 of the sorted, concatenated token, timestamp, nonce and ciphertext."""
    signer = WeChatSigner()
    signer.add_data(token, timestamp, nonce, encrypted)
    return signer.signature


class CallbackCrypto:
    """Verify and decrypt (or encrypt) WeCom callback payloads for one Token/EncodingAESKey/receiveid."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str, replay_window_seconds: int = 600) -> None:
        try:
            self.key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except binascii.Error as exc:
            raise ValueError("EncodingAESKey is not valid base64") from exc
        if len(self.key) != 32:
            raise ValueError("EncodingAESKey must decode to 32 bytes")
        self.token = token
        self.receive_id = receive_id
        self.replay_window = replay_window_seconds

    def check_timestamp(self, timestamp: str, now: float | None = None) -> None:
        if not timestamp.isdigit() or len(timestamp) > 12:
            raise Rejected(400, "timestamp is not a number")
        if self.replay_window and abs((now or time.time()) - int(timestamp)) > self.replay_window:
            raise Rejected(403, "timestamp outside the replay window")

    def check_signature(self, msg_signature: str, timestamp: str, nonce: str, encrypted: str) -> None:
        expected = signature(self.token, timestamp, nonce, encrypted)
        if not hmac.compare_digest(expected.encode(), msg_signature.lower().encode()):
            raise Rejected(403, "signature mismatch")

    def decrypt(self, encrypted: str) -> bytes:
        """The message inside a ciphertext, after checking padding, length and receiveid."""
        try:
            raw = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError):
            raise Rejected(400, "ciphertext is not valid base64") from None
        if not raw or len(raw) % 16:
            raise Rejected(400, "ciphertext length is not a whole number of AES blocks")
        plain = WeChatCipher(self.key).decrypt(raw)
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise Rejected(400, "bad padding")
        content = plain[16:-pad]
        if len(content) < 4:
            raise Rejected(400, "plaintext too short")
        (length,) = struct.unpack(">I", content[:4])
        if 4 + length > len(content):
            raise Rejected(400, "message length exceeds plaintext")
        message, receive_id = content[4 : 4 + length], content[4 + length :]
        if not hmac.compare_digest(receive_id, self.receive_id.encode()):
            raise Rejected(403, "receiveid mismatch")
        return message

    def open(self, msg_signature: str, timestamp: str, nonce: str, encrypted: str) -> bytes:
        """Every check in order (timestamp, signature, decryption): the plaintext, or Rejected."""
        self.check_timestamp(timestamp)
        self.check_signature(msg_signature, timestamp, nonce, encrypted)
        return self.decrypt(encrypted)

    def encrypt(self, message: str | bytes, nonce: str, timestamp: str | None = None) -> tuple[str, str, str]:
        """(ciphertext, signature, timestamp) for a passive reply, or for tests that play WeCom."""
        timestamp = timestamp or str(int(time.time()))
        text = message.decode() if isinstance(message, bytes) else message
        encrypted = PrpCrypto(self.key).encrypt(text, self.receive_id).decode()
        return encrypted, signature(self.token, timestamp, nonce, encrypted), timestamp


# A markup declaration (`<!`) that is neither a CDATA section nor a comment: a DOCTYPE, ENTITY, ELEMENT …
_DECLARATION = re.compile(rb"<!(?!\[CDATA\[|--)")


def _only_cdata_and_comments(raw: bytes) -> bool:
    """True if every markup declaration (`<!`) is a CDATA section or a comment (so no DOCTYPE/ENTITY)."""
    return _DECLARATION.search(raw) is None


def parse_xml_root(data: bytes | str) -> ET.Element:
    """The parsed document's root element; refuses DTDs, entities and malformed input (Rejected 400)."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        if _only_cdata_and_comments(raw):
            # No DTD means no entity can be declared: expat alone is safe here and twice as fast.
            return ET.fromstring(raw)  # noqa: S314
        return safe_fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (DefusedXmlException, ET.ParseError, ValueError) as exc:
        raise Rejected(400, f"malformed or unsafe XML: {type(exc).__name__}") from None


def parse_xml(data: bytes | str) -> dict[str, object]:
    """A flat dict of the root's children; refuses DTDs, entities and malformed input.

    A child with <Item> children (e.g. MemChangeList) becomes a list of their texts.
    """
    root = parse_xml_root(data)
    out: dict[str, object] = {}
    for child in root:
        items = [item.text or "" for item in child if item.tag == "Item"] if len(child) else None
        out[child.tag] = items if items else (child.text or "").strip()
    return out
