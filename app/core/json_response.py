"""The JSON response class for replies built in one piece (the error envelope): orjson, as
every other JSON reply of the service, instead of the standard library's encoder."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    """``content`` encoded by orjson; numpy arrays are written directly. orjson writes NaN
    and infinities as ``null``, so routes check finiteness before replying with numbers."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
