"""The RME platform: physical memory with a granule protection table, the EL3 monitor,
the AArch64 vCPU, and the platform root of trust."""
