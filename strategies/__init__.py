"""fedsim: strategies."""
