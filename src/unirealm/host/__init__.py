"""The normal world: the kvmtool-equivalent VMM and the pieces it is built from.

memmap   kvmtool's arm64 guest memory map, `-m` parsing, Image header, image placement
fdt      the guest device tree, built as kvmtool's arm fdt.c builds it
cmdline  the `lkvm run`-compatible argument parser and its RunConfig
devices  the MMIO bus and the emulated devices (ns16550a, ...)
"""
