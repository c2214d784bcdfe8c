"""The bottom layer: accounts and organisations, errors, validators, settings helpers."""
