"""Pure decoders and encoders for the service: tensors (.npy, JSON), images, preprocessing.

No FastAPI and no torch here. Every function raises ``CodecError`` (a ``ValueError``
carrying an HTTP status and a machine code) for bad client input, checked before anything
large is allocated.
"""
