"""Core fixtures: isolated plugin managers, event recorders, fake build hosts."""
