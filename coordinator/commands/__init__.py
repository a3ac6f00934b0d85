"""One module per oppu-coordinator command: a plain function ``oppu.coordinator.cli`` registers.

The modules do not import the CLI (that would make ``cli`` and ``commands`` import each
other); commands that need packages above the coordinator (``oppu-coordinator simulate``,
``demo``) live in those packages and arrive through an entry-point group instead.
"""
