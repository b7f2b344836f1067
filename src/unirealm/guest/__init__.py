"""The unirealm unikernel: a library OS shipped inside the kernel image.

It reaches the world only through the GuestCpu it boots on (SMC/HVC registers, loads and
stores at IPAs, WFI, EL0 execution) and imports nothing of unirealm but `arch`, always with
relative imports, so the copy loaded from the image is self-contained.
"""
