"""poolserve's PyTorch side: the pooling library and the descriptor models."""
