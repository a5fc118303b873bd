"""Lambda entry point of the gateway function: Mangum over the buffered public routes."""

from tollgate.startup import cold_start

with cold_start():
    from mangum import Mangum

    from tollgate.api.apps import gateway_app

    handler = Mangum(gateway_app(), lifespan="off")
