"""Export: FP32 ONNX with AIMET tensor names, AIMET encodings files (0.6.1, 1.0.0, 2.0.0) and
QDQ ONNX for ONNX Runtime; reading encodings back into a QuantSim.

>>> result = export_sim(sim, "out/", encoding_version="1.0.0")            # doctest: +SKIP
>>> fresh.load_encodings(result.encodings)                                 # doctest: +SKIP
>>> compare_outputs(sim(x), run_onnx(result.qdq_onnx, [x])[0])             # doctest: +SKIP
"""

from core.export.formats import ENCODING_VERSIONS
from core.export.loader import load_encodings
from core.export.reader import parse_encodings, read_encodings_file, write_encodings_file
from core.export.records import EncodingRecord, EncodingsDoc
from core.export.runtime import OnnxRunner, compare_outputs, run_onnx
from core.export.sim_export import ExportResult, export_sim, trace_tensor_map
from core.export.tensor_map import TensorBinding, TensorMap

__all__ = [
    "ENCODING_VERSIONS",
    "EncodingRecord",
    "EncodingsDoc",
    "ExportResult",
    "OnnxRunner",
    "TensorBinding",
    "TensorMap",
    "compare_outputs",
    "export_sim",
    "load_encodings",
    "parse_encodings",
    "read_encodings_file",
    "run_onnx",
    "trace_tensor_map",
    "write_encodings_file",
]
