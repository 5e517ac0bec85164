"""onnxruntime sessions, providers, the concurrency gate and the /pool graph cache."""
