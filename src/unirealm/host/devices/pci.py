"""kvmtool's PCI host bridge (pci-host-ecam-generic at KVM_PCI_CFG_AREA) with no function on
it: every virtio device of this VMM is on virtio-mmio, so the bus kvmtool always describes in
the device tree is empty. ECAM configuration reads return all ones (PCI Local Bus 3.0 §6.1:
a read of a function that does not exist returns FFFFh in Vendor ID), writes are dropped."""

from __future__ import annotations


class EmptyPciBus:
    """The ECAM window of a PCI bus with no devices."""

    def mmio_read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        return None
