"""Engines: the round loop over an in-process Grid, a Ray actor pool, or Flower's runtime."""
