"""poolserve service: FastAPI on onnxruntime, torch-free."""
