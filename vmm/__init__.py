"""The VMM core: VM, guest memory, vCPU threads, exit dispatch, boot loaders, CLI."""
