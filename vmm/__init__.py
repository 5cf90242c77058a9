"""The VMM core: VM, guest memory, vCPU threads, exit dispatch, boot loaders, CLI."""

# The package's one version: pyproject.toml reads it from here (setuptools' attr:) into the
# installed metadata, and `vmm --version` prints it without importlib.metadata (~12 ms,
# a quarter of that command's start-up).
__version__ = "0.1.0"
