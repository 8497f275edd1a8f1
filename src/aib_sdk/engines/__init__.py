"""Engines that run builds somewhere other than this process (``temporal``: a Temporal cluster's workers)."""
