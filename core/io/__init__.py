"""Model and data I/O: ``.pt2`` and ``.onnx`` models, ``.npz`` and ``.safetensors`` data.

Untrusted bytes are never unpickled; ONNX external data is read only from the model's own folder;
sizes are bounded before allocation. Every bad input raises ModelLoadError or DataLoadError with
the file name, what is wrong and what is accepted.
"""

from core.io.data import CalibrationData, load_data
from core.io.loaded_model import LoadedModel
from core.io.models import load_exported_program, load_model

__all__ = ["CalibrationData", "LoadedModel", "load_data", "load_exported_program", "load_model"]
