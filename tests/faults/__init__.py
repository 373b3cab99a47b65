"""Fault-injection suite: the stack as real processes, broken on purpose under a steady flow."""
