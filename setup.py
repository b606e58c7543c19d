# The one compiled part of fastpath: 64-bit atomics for shared memory (src/fastpath/_atomic.c
# says why). Everything else is in pyproject.toml.
from setuptools import Extension, setup

setup(ext_modules=[Extension("fastpath._atomic", ["src/fastpath/_atomic.c"],
                             extra_compile_args=["-O2", "-std=c11"])])
