"""Tokens: reading and verifying JWT claims, and the identity providers that refresh them."""
