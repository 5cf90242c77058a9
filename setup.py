# The cffi extension is declared here because pyproject.toml has no key for it.
from setuptools import setup

setup(cffi_modules=["kvm_bindings/_build.py:ffibuilder"])
