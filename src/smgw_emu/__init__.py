"""smgw-emu: a virtual Smart Meter Gateway."""
__version__ = "0.1.0"
