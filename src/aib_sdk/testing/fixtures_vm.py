"""VM fixtures: the tiny test guest source and helpers to inspect built disks."""
