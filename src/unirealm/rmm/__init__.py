"""The Realm Management Monitor (DEN0137 1.0-rel0): RMI for the host, RSI for realms."""
