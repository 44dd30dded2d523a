"""Registered training algorithms (``transferkit methods`` lists them)."""

from transferkit.methods import (  # noqa: F401  (registration)
    da_adda,
    da_adversarial,
    da_reconstruction,
    da_selftrain,
    da_shallow,
    distill,
    domain_adaptation,
    finetune,
    linear_probe,
    multitask,
    setfit,
)
from transferkit.methods.base import METHODS, Method, MethodParams, register_method

__all__ = ["METHODS", "Method", "MethodParams", "register_method"]
