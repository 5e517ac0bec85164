"""The Open Inference Protocol (KServe v2): REST, gRPC and system shared memory."""
