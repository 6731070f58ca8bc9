"""ApiFunction's handler: API Gateway HTTP API (payload v2) -> FastAPI through Mangum.

lifespan="off": Mangum would run the app's lifespan on every invocation, so start-up work lives
in lazily built dependencies instead (https://mangum.fastapiexpert.com/lifespan/).
"""

from mangum import Mangum

from jobbridge.observability import get_logger
from jobbridge_api.main import app

logger = get_logger()
_asgi = Mangum(app, lifespan="off")


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId", clear_state=True)
def handler(event, context):
    return _asgi(event, context)
