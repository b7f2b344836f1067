"""`unirealm token create`: launch a minimal realm through the RMI and write its CCA token."""

from __future__ import annotations

import argparse


def register(token_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `create` parser under `unirealm token`. Filled in with the RMM."""
    p = token_sub.add_parser("create", help="boot a minimal realm and write its attestation token")
    p.set_defaults(func=lambda args: 2)
