"""Provider registration through the admin API."""

from __future__ import annotations


def test_bedrock_registers_with_a_region_and_no_base_url_or_key(client, admin_headers):
    response = client.put(
        "/admin/v1/providers/bedrock", json={"type": "bedrock", "region": "us-east-1"}, headers=admin_headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["has_api_key"] is False


def test_a_type_without_a_default_url_needs_one(client, admin_headers):
    response = client.put("/admin/v1/providers/x", json={"type": "openai_compatible"}, headers=admin_headers)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "base_url"


def test_a_vendor_that_needs_a_key_is_refused_without_one(client, admin_headers):
    response = client.put("/admin/v1/providers/openai", json={"type": "openai"}, headers=admin_headers)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "api_key"


def test_metadata_endpoints_are_refused_as_base_urls(client, admin_headers):
    response = client.put(
        "/admin/v1/providers/evil",
        json={"type": "openai_compatible", "base_url": "http://169.254.169.254/latest"},
        headers=admin_headers,
    )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "base_url"
