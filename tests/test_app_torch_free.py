"""The serving path never imports torch: start the app and serve /pool and /descriptor with
torch made unimportable, in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import asyncio, io, sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    import httpx
    import numpy as np
    from PIL import Image
    from app.core.config import Settings
    from app.main import create_app

    async def main() -> None:
        settings = Settings(model_repository=sys.argv[1], providers=["CPUExecutionProvider"])
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                x = {"shape": [1, 1, 4, 4], "dtype": "float32", "data": list(range(16))}
                cases = [("max", {"kernel_size": 2}), ("rmac", {}), ("median", {"kernel_size": 3})]
                for op, params in cases:
                    r = await client.post("/pool", json={"op": op, "params": params, "tensor": x})
                    assert r.status_code == 200, r.text
                buf = io.BytesIO()
                Image.new("RGB", (80, 90), (1, 2, 3)).save(buf, "PNG")
                png = {"content": buf.getvalue(), "headers": {"content-type": "image/png"}}
                r = await client.post("/descriptor", **png)
                assert r.status_code == 200, r.text
                assert (await client.get("/models")).status_code == 200
        assert "torch" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}

    asyncio.run(main())
    print("torch-free ok")
    """
)


def test_app_serves_with_torch_unimportable(app_repository: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(app_repository)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch-free ok" in result.stdout
