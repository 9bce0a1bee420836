"""Training recipes shipped as package data (TOML); see starcli/recipes.py for how they are resolved."""
