"""Shared memory between local processes: memfd regions, sealed and mapped MAP_SHARED."""
