"""Tooling for working on vision_attn (not installed): the mutation tester and the lint checkers."""
