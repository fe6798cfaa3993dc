"""Shipped search spaces (YAML). Load them with ``nas.space.load_space(NAME)``."""
