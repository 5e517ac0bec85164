"""The torch-free half of ``export``: what the service imports on every request.

Lowerings (one module per pooling family) and their registry, the /pool graph builder, the
onnxruntime sessions and kernels, and the model repository's manifest. Nothing here imports
torch or the torch exporter beside it (``export.torch_export``, ``export.repository``, ...);
``make test`` checks that with import-linter (``.importlinter``).
"""
