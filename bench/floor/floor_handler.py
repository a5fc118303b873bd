"""The floor for a function's cold import: a bare FastAPI app with one route under Mangum (what any
FastAPI-on-Lambda function pays before its own code). ``bench.coldstart`` imports it like the
real entry modules."""

from fastapi import FastAPI
from mangum import Mangum

app = FastAPI()


@app.get("/v1/models")
async def models() -> dict[str, object]:
    return {"object": "list", "data": []}


handler = Mangum(app, lifespan="off")
