"""Recipes: YAML training configs plus the commands that run them end to end."""
