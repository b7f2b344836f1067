"""Emulated devices the VMM places on the guest's MMIO bus."""
