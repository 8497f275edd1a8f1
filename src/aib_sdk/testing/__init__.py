"""Test harness: fakes for every protocol, an event recorder, the tiny test guest, and pytest fixtures."""
