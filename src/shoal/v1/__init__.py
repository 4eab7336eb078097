"""Code generated from proto/shoal/v1/*.proto by proto/generate.py: do not edit."""
