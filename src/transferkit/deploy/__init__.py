"""Deployment: size and CPU speed of a trained model, and export to ONNX / TorchScript /
safetensors (the distillation student, or any method's prediction module)."""

from transferkit.deploy.export import ExportError, export_model, load_safetensors
from transferkit.deploy.measure import compare_deployment, count_parameters, measure_deployment
from transferkit.deploy.predict import BackboneHead, predict_module

__all__ = [
    "BackboneHead",
    "ExportError",
    "compare_deployment",
    "count_parameters",
    "export_model",
    "load_safetensors",
    "measure_deployment",
    "predict_module",
]
