"""The VMM's networks: `usernet` is kvmtool's user mode (`-n mode=user`) in pure Python."""
