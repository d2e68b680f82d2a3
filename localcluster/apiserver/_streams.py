"""Pod subresources that stream: log, exec, portforward."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import BadRequest
from ._http import Request, Response

if TYPE_CHECKING:
    from ._app import ApiServer, Target


async def handle(app: ApiServer, req: Request, target: Target) -> Response:
    raise BadRequest("not yet")


async def handle_log(app: ApiServer, req: Request, target: Target) -> Response:
    raise BadRequest("not yet")
