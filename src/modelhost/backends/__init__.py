"""Backends run instances. ``base`` is the seam; ``local`` supervises processes on this machine."""
