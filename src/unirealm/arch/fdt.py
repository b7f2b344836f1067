"""The flattened device tree blob format (Devicetree Specification v0.4, chapter 5): header
fields, structure-block tokens and the version this project writes. All values big-endian.
"""

from __future__ import annotations

import struct

FDT_MAGIC = 0xD00DFEED
FDT_VERSION = 17
FDT_LAST_COMP_VERSION = 16

# §5.2 fdt_header: magic, totalsize, off_dt_struct, off_dt_strings, off_mem_rsvmap, version,
# last_comp_version, boot_cpuid_phys, size_dt_strings, size_dt_struct
FDT_HEADER = struct.Struct(">10I")
FDT_RESERVE_ENTRY = struct.Struct(">QQ")  # §5.3 fdt_reserve_entry: address, size

# §5.4.1 structure-block tokens
FDT_BEGIN_NODE = 0x1
FDT_END_NODE = 0x2
FDT_PROP = 0x3
FDT_NOP = 0x4
FDT_END = 0x9
FDT_PROP_HEADER = struct.Struct(">III")  # FDT_PROP, len, nameoff
