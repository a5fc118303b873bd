"""Lambda entry point of the admin function: Mangum over the admin API."""

from tollgate.startup import cold_start

with cold_start():
    from mangum import Mangum

    from tollgate.api.apps import admin_app

    handler = Mangum(admin_app(), lifespan="off")
