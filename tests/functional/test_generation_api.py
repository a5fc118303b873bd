"""Embeddings and images through the real app, on moto, with the fake provider."""

from __future__ import annotations

import base64
import math


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_embeddings_are_unit_vectors_one_per_input(client, tenant_key):
    response = client.post(
        "/v1/embeddings",
        json={"model": "fake/embed", "input": ["alpha", "beta", "alpha"], "dimensions": 16},
        headers=bearer(tenant_key),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    vectors = [item["embedding"] for item in body["data"]]
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    assert all(len(vector) == 16 for vector in vectors)
    assert all(math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-4) for vector in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0


def test_images_are_real_pngs(client, tenant_key):
    response = client.post(
        "/v1/images/generations",
        json={"model": "fake/image", "prompt": "a red fox", "n": 2},
        headers=bearer(tenant_key),
    )

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 2
    assert base64.b64decode(data[0]["b64_json"]).startswith(b"\x89PNG\r\n\x1a\n")


def test_a_chat_model_cannot_embed(client, tenant_key):
    response = client.post(
        "/v1/embeddings", json={"model": "fake/echo", "input": "x"}, headers=bearer(tenant_key)
    )

    assert response.status_code == 404  # fake/echo is not an embedding model of the fake provider
    assert response.json()["error"]["code"] == "model_not_found"


def test_empty_embedding_input_is_400(client, tenant_key):
    response = client.post(
        "/v1/embeddings", json={"model": "fake/embed", "input": []}, headers=bearer(tenant_key)
    )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


def test_generation_is_metered(client, tenant_key, admin_headers):
    client.post("/v1/embeddings", json={"model": "fake/embed", "input": "x"}, headers=bearer(tenant_key))
    client.post(
        "/v1/images/generations", json={"model": "fake/image", "prompt": "y"}, headers=bearer(tenant_key)
    )

    records = client.get("/admin/v1/usage", params={"tenant_id": "acme"}, headers=admin_headers).json()[
        "data"
    ]

    assert sorted(r["endpoint"] for r in records) == ["embeddings", "images.generations"]
    assert all(r["status"] == 200 for r in records)
