"""Test helpers: Azurite runner and the ARM test server (a test server, not Azure)."""
