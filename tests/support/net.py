"""Addresses for processes the tests start: one free port on 127.0.0.1 (the one of
hack/cluster/localproc.py, which bench/ uses too)."""

from __future__ import annotations

from localproc import free_port

__all__ = ["free_port"]
