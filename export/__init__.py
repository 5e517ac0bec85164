"""ONNX export for the pooling library: one lowering per op, a torch-free graph builder,
runtime sessions with custom-op kernels, and the parity gate every artifact must pass.

Modules that need torch (``torch_export``) are never imported from here, so the serving
path (``graph``, ``runtime``) runs in a container without torch.
"""
