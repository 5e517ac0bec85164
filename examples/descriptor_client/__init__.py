"""The pieces of ``examples/client.py``: inputs, the resumable store, the retry policy, one
request, the concurrent run and its summary."""
