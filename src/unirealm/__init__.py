"""unirealm: the Arm CCA realm world in Python."""

__version__ = "0.1.0"
