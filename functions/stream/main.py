"""The stream function's ASGI app, served by uvicorn (``run.sh``) under the Lambda Web Adapter.

The managed Python runtime cannot stream a response; the adapter can, so chat runs here.
"""

from tollgate.startup import cold_start

with cold_start():
    from tollgate.api.apps import stream_app

    app = stream_app()
