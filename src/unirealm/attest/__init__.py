"""The relying party: decode and verify CCA attestation tokens, predict RIMs, emit reference values."""
