"""Thin entry points: load config, call library functions, write outputs."""
