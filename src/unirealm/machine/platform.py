"""The platform root of trust: a persistent platform identity and the CCA platform token.

This plays the part of the HES (the hardware enforced security element) of an Arm CCA
system: it owns the CPAK (CCA platform attestation key, P-384), knows the platform's
implementation and instance IDs, lifecycle state, configuration and the measurements of
the firmware it booted — including the RMM's own code — and signs platform tokens whose
challenge the RMM supplies (the hash of a realm attestation key).

The identity is created on first use in the user's data directory, so every realm token
this machine issues chains to the same endorsable key.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

import unirealm
from unirealm.arch import token as tk

LIFECYCLE_SECURED = 0x3000
DEFAULT_VERIFICATION_SERVICE = "http://localhost:8080/.well-known/veraison/verification"
IMPLEMENTATION_NAME = b"unirealm RME platform model, implementation 1"
PLATFORM_HASH_ALGO = "sha-256"

# Firmware this platform "boots" and measures: (measurement type, the code that plays it).
FIRMWARE_COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("HES_ROT", ("machine/platform.py",)),
    ("AP_BL31", ("machine/monitor.py", "machine/memory.py")),
    ("RMM", ("rmm",)),
)


def data_dir() -> Path:
    """Where persistent state lives: $UNIREALM_DATA_DIR, else $XDG_DATA_HOME/unirealm."""
    explicit = os.environ.get("UNIREALM_DATA_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "unirealm"


def es384_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-384/SHA-384, as the raw r||s (96 bytes) COSE wants (RFC 9053 §2.1)."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA384())))
    n = (key.curve.key_size + 7) // 8
    return r.to_bytes(n, "big") + s.to_bytes(n, "big")


def measure_code(relative_paths: tuple[str, ...]) -> bytes:
    """SHA-256 over the named files (or every .py under a named package), in sorted order."""
    root = Path(unirealm.__file__).parent
    files: list[Path] = []
    for rel in relative_paths:
        path = root / rel
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
    return h.digest()


@dataclass(frozen=True)
class SoftwareComponent:
    measurement_type: str
    measurement_value: bytes
    version: str
    signer_id: bytes
    measurement_description: str = "sha-256"

    def claim(self) -> dict[int, object]:
        return {
            tk.SWC_MEASUREMENT_TYPE: self.measurement_type,
            tk.SWC_MEASUREMENT_VALUE: self.measurement_value,
            tk.SWC_VERSION: self.version,
            tk.SWC_SIGNER_ID: self.signer_id,
            tk.SWC_MEASUREMENT_DESCRIPTION: self.measurement_description,
        }

    def as_json(self) -> dict[str, str]:
        return {
            "measurement-type": self.measurement_type,
            "measurement-value": self.measurement_value.hex(),
            "version": self.version,
            "signer-id": self.signer_id.hex(),
            "measurement-description": self.measurement_description,
        }


@dataclass
class PlatformIdentity:
    """What a verifier needs to endorse this platform, plus the private CPAK."""

    cpak: ec.EllipticCurvePrivateKey
    implementation_id: bytes
    lifecycle: int = LIFECYCLE_SECURED
    config: bytes = b"\x00\x00\x00\x01"
    verification_service: str = DEFAULT_VERIFICATION_SERVICE
    profile: str = tk.PROFILE_PLATFORM_1_0
    software_components: list[SoftwareComponent] = field(default_factory=list)

    @property
    def cpak_public_pem(self) -> bytes:
        return self.cpak.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def cpak_public_point(self) -> bytes:
        return self.cpak.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    @property
    def instance_id(self) -> bytes:
        """UEID of type RAND (0x01) followed by SHA-256 of the CPAK public point."""
        return b"\x01" + hashlib.sha256(self.cpak_public_point).digest()

    @property
    def signer_id(self) -> bytes:
        return hashlib.sha256(self.cpak_public_point).digest()


class PlatformRoT:
    """The HES-like root of trust: loads or creates the identity and signs platform tokens."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = (directory or data_dir()) / "platform"
        self.identity = self._load_or_create()
        self.identity.software_components = self._measure_firmware()

    def _load_or_create(self) -> PlatformIdentity:
        key_path = self.directory / "cpak.pem"
        meta_path = self.directory / "identity.json"
        if key_path.exists() and meta_path.exists():
            try:
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
                meta = json.loads(meta_path.read_text())
                if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp384r1":
                    raise ValueError("CPAK is not a P-384 key")
                return PlatformIdentity(
                    cpak=key,
                    implementation_id=bytes.fromhex(meta["implementation_id"]),
                    lifecycle=int(meta["lifecycle"]),
                    config=bytes.fromhex(meta["config"]),
                    verification_service=str(meta["verification_service"]),
                    profile=str(meta.get("profile", tk.PROFILE_PLATFORM_1_0)),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise RuntimeError(f"platform identity in {self.directory} is unreadable: {exc}") from None
        identity = PlatformIdentity(
            cpak=ec.generate_private_key(ec.SECP384R1()),
            implementation_id=hashlib.sha256(IMPLEMENTATION_NAME).digest(),
        )
        self._save(identity)
        return identity

    def _save(self, identity: PlatformIdentity) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        pem = identity.cpak.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        meta = {
            "implementation_id": identity.implementation_id.hex(),
            "lifecycle": identity.lifecycle,
            "config": identity.config.hex(),
            "verification_service": identity.verification_service,
            "profile": identity.profile,
        }
        # Write both files atomically so a concurrent first use never sees half an identity.
        for name, data, mode in (("cpak.pem", pem, 0o600), ("identity.json", json.dumps(meta, indent=2).encode(), 0o644)):
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, mode)
            os.replace(tmp, self.directory / name)

    def _measure_firmware(self) -> list[SoftwareComponent]:
        return [
            SoftwareComponent(name, measure_code(paths), unirealm.__version__, self.identity_signer_id())
            for name, paths in FIRMWARE_COMPONENTS
        ]

    def identity_signer_id(self) -> bytes:
        return self.identity.signer_id

    def platform_claims(self, challenge: bytes) -> dict[int, object]:
        ident = self.identity
        return {
            tk.PLATFORM_PROFILE: ident.profile,
            tk.PLATFORM_CHALLENGE: challenge,
            tk.PLATFORM_IMPLEMENTATION_ID: ident.implementation_id,
            tk.PLATFORM_INSTANCE_ID: ident.instance_id,
            tk.PLATFORM_CONFIG: ident.config,
            tk.PLATFORM_LIFECYCLE: ident.lifecycle,
            tk.PLATFORM_SW_COMPONENTS: [c.claim() for c in ident.software_components],
            tk.PLATFORM_VERIFICATION_SERVICE: ident.verification_service,
            tk.PLATFORM_HASH_ALGO_ID: PLATFORM_HASH_ALGO,
        }

    def platform_token(self, challenge: bytes) -> bytes:
        """A COSE_Sign1 (ES384, CPAK) over the platform claims with the given challenge."""
        if len(challenge) not in (32, 48, 64):
            raise ValueError("platform challenge must be 32, 48 or 64 bytes")
        payload = cbor2.dumps(self.platform_claims(challenge))
        return tk.sign1(payload, lambda tbs: es384_sign(self.identity.cpak, tbs)).encode()
