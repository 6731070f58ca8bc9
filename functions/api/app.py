"""ApiFunction's handler: API Gateway HTTP API (payload v2) -> FastAPI through Mangum.

lifespan="off": Mangum would run the app's lifespan on every invocation, so start-up work lives
in lazily built dependencies instead (https://mangum.fastapiexpert.com/lifespan/).
"""

from mangum import Mangum
from mangum.adapter import DEFAULT_TEXT_MIME_TYPES

from jobbridge.observability import get_logger
from jobbridge_api.main import app

logger = get_logger()
# Problem bodies are JSON text: without this Mangum would base64-encode them as binary.
_asgi = Mangum(app, lifespan="off", text_mime_types=[*DEFAULT_TEXT_MIME_TYPES, "application/problem+json"])


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId", clear_state=True)
def handler(event, context):
    return _asgi(event, context)
