"""fedsim: fairness."""
