"""The VMuC-style teacher codec (about 69 kMAC per luma pixel to decode)."""
