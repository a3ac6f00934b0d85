"""``oppu-coordinator`` commands that run simulations, one module each.

They live here, not in ``oppu.coordinator.commands``, because they import
``oppu.simulations`` and the coordinator must not (simulations sit above it). The
coordinator's CLI finds them through the ``oppu.coordinator.commands`` entry-point group
declared in pyproject.toml; each entry is a plain function that typer turns into a command.
"""
