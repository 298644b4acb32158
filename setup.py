# The project metadata lives in pyproject.toml.  This file exists only because
# cffi's build hook is a setup() keyword: it compiles trio_uring/_ring.c into
# trio_uring._ring_cffi at install time.
from setuptools import setup

setup(cffi_modules=["trio_uring/_ring_build.py:ffibuilder"])
