# The compiled parts of fastpath: 64-bit atomics for shared memory (src/fastpath/_atomic.c
# says why), SharedTable's lookup (src/fastpath/rcu/_lookup.c), a Channel end's
# per-message path (src/fastpath/shm/_ring.c) and the proxy's copy path
# (src/fastpath/proxy/_lane.c). Everything else is in
# pyproject.toml.
from setuptools import Extension, setup

_FLAGS = ["-O2", "-std=c11", "-Wall"]

setup(ext_modules=[
    Extension("fastpath._atomic", ["src/fastpath/_atomic.c"], extra_compile_args=_FLAGS),
    Extension("fastpath.rcu._lookup", ["src/fastpath/rcu/_lookup.c"], extra_compile_args=_FLAGS),
    Extension("fastpath.shm._ring", ["src/fastpath/shm/_ring.c"], extra_compile_args=_FLAGS),
    Extension("fastpath.proxy._lane", ["src/fastpath/proxy/_lane.c"], extra_compile_args=_FLAGS),
])
