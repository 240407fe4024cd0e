"""fedsim: clients."""
