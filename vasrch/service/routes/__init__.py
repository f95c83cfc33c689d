"""The service's routers, one module each: `search` (GET and POST /query), `status` (/health and
/metrics) and `docs` (Swagger UI, ReDoc and their assets, served by the service itself)."""
