"""The ONNX versions every artifact is pinned to.

onnx 1.23 writes IR version 14 by default, which onnxruntime 1.31 refuses (it reads up to 13).
We pin IR 10, what torch 2.13's exporter writes, so built graphs and exported models agree
and older Triton onnxruntime backends still load them. Opset 20 is torch's default and the
first opset whose AveragePool ceil_mode follows the spec in onnxruntime.
"""

OPSET = 20
IR_VERSION = 10

CUSTOM_DOMAIN = "ai.onnx.contrib"
"""onnxruntime-extensions serves Python kernels (PyOp) only in this domain."""

CUSTOM_OPSET = 1
