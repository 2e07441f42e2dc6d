"""Experiments written as data (one TOML file each) and the one runner that prints or runs them."""
