"""aib-sdk's QEMU provider: a local build host, and the sources it boots (local/URL disks, Debian, tiny guest)."""
