"""The kernel plumbing every mechanism shares, in one place: an owned fd (`fd`), libc for
the calls Python 3.11 lacks (`libc`), network namespaces (`netns`), process liveness
(`proc`), atomic file writes (`files`) and the cgroup v2 mount (`cgroup2`).

Nothing here knows a mechanism: podnet, sockredir, bgp, proxy, shm and rcu import it,
never the reverse.
"""
