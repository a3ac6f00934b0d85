"""One module per oppu-coordinator command."""
