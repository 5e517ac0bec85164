"""Optional coverage-guided fuzzing of ``parse_npy`` with atheris; the suite never needs it.

atheris is not a project dependency. To fuzz (Ctrl-C to stop; crashes are written to the
current directory)::

    .venv/bin/pip install atheris
    .venv/bin/python -m tests.test_codecs_npy_atheris -atheris_runs=200000 [CORPUS_DIR]

The target is the property of tests/test_codecs_npy_fuzz.py: ``parse_npy`` returns what
numpy's reader makes of the bytes, or raises a 4xx ``CodecError``, within the time budget.
Under pytest only the seed check below runs, without atheris, so the target cannot rot.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import numpy as np

from tests.test_codecs_npy_fuzz import check


def seeds() -> list[bytes]:
    """numpy's own files to start from: every accepted dtype, all three format versions."""
    out = []
    for version in ((1, 0), (2, 0), (3, 0)):
        for dtype in ("<f4", ">f2", "<i8"):
            buf = io.BytesIO()
            arr = np.arange(6, dtype=dtype).reshape(2, 3)
            np.lib.format.write_array(buf, arr, version=version)
            out.append(buf.getvalue())
    return out


def test_atheris_target_holds_on_the_seeds() -> None:
    for data in seeds():
        check(data)
        check(data[: len(data) // 2])


def main() -> None:
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

    args = sys.argv
    if all(arg.startswith("-") for arg in args[1:]):  # no corpus given: start from the seeds
        corpus = Path(tempfile.mkdtemp(prefix="npy-corpus-"))
        for i, data in enumerate(seeds()):
            (corpus / f"seed{i}.npy").write_bytes(data)
        args = [*args, str(corpus)]
    atheris.instrument_all()  # coverage feedback from everything imported so far
    atheris.Setup(args, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
