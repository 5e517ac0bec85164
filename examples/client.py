"""Describe many images with poolserve: concurrent, resumable, and tolerant of bad files.

    python examples/client.py photos/ --out descriptors/ [--url http://127.0.0.1:8000]
        [--api-key KEY] [--model netvlad_poolformer_s12] [--batch 8] [--concurrency 4]
        [--format npy|json] [--retries 5] [--files-from list.txt] [--top 5]

Posts the images to ``/descriptor``, ``--batch`` per request and ``--concurrency`` requests
in flight, and writes each descriptor to ``<out>/<image name>.npy`` as its answer arrives;
a rerun skips the images already there. Overload (503 with Retry-After) and connection
errors are retried with backoff; a file the server refuses is reported by name and skipped.
The summary counts what was done; the exit code is 0 when every image has its descriptor,
1 when some failed, 2 when the run stopped (a wrong key, model or URL; no server).
Needs ``pip install .[client]`` (httpx, numpy, tqdm). The pieces are in
``examples/descriptor_client/``.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a script, Python puts examples/ on the path: the package needs the repository.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples.descriptor_client.cli import main

    sys.exit(main())
