"""The pure domain core: event contracts and the logic the services share (no I/O)."""
