"""Registered training algorithms (``transferkit methods`` lists them)."""

from transferkit.methods import finetune, linear_probe  # noqa: F401  (registration)
from transferkit.methods.base import METHODS, Method, MethodParams, register_method

__all__ = ["METHODS", "Method", "MethodParams", "register_method"]
