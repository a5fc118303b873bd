"""Lambda entry point of the admin function: Mangum over the admin API."""

from mangum import Mangum

from tollgate.api.apps import admin_app

handler = Mangum(admin_app(), lifespan="off")
