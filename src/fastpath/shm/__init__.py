"""Shared memory between local processes: memfd regions, sealed and mapped MAP_SHARED.

    memfd      Region: a memfd, sized, sealed, mapped (the kernel edge)
    header     the versioned hand-over header (pure)
    handover   Listener / Connection: regions over SCM_RIGHTS, checked before mapping
    pool       RegionPool: reusable pre-faulted regions
    ring       Channel ring layout and counter rules (pure)
    channel    offer() / accept(): an SPSC Channel (Producer / Consumer) with eventfd wakeups
    errors     HandoverRefused, PeerNotAllowed, PeerDied, ChannelClosed, ChannelTimeout

This package module imports nothing: `fastpath.shm.commands` must load fast for the CLI.
"""
