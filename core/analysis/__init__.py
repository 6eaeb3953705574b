"""QuantAnalyzer: per-layer sensitivity, ranges, histograms, per-layer error; plots and an HTML report."""

from core.analysis.analyzer import AnalysisResult, QuantAnalyzer
from core.analysis.metrics import OutputAgreement, cosine, sqnr_db

__all__ = ["AnalysisResult", "OutputAgreement", "QuantAnalyzer", "cosine", "sqnr_db"]
