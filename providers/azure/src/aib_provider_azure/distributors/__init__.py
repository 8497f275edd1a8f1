"""Azure distributors: ``VHD`` (page blob), ``ManagedImage`` and ``SharedImage`` (gallery image version)."""
