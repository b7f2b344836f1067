"""Architecture facts owned once: function IDs, codes, enums and byte layouts.

Every other layer (machine, rmm, host, guest, attest) takes its constants from here.
The guest may import this package and nothing else of unirealm.
"""
