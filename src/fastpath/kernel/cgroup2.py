"""Where the cgroup v2 hierarchy is mounted: read from /proc/mounts, never assumed
(/sys/fs/cgroup on most systems, /sys/fs/cgroup/unified on hybrid ones, like this one)."""

from __future__ import annotations

from fastpath.errors import MissingDependency


def mount_point() -> str | None:
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return parts[1]
    return None


def root() -> str:
    """The cgroup2 mount point; MissingDependency when none is mounted."""
    mp = mount_point()
    if mp is None:
        raise MissingDependency("no cgroup2 hierarchy is mounted", op="find cgroup2",
                                hint="mount -t cgroup2 none /sys/fs/cgroup")
    return mp
