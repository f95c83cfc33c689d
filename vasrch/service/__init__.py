"""Stage 9, the service: the warm HTTP query server (`vasrch query-server`), on FastAPI and uvicorn.

One job per module: `settings` (what the service is told, checked), `holder` (the served run,
in memory, swapped when runs/LATEST moves on), `uploads` (an image out of a POST body),
`limits` (pixel limit and decode slots), `memory` (freed memory back to the OS), `metrics`
(Prometheus), `middleware` (access log and request metrics), `schemas` (body and answer shapes),
`parameters` (the query string's models), `dependencies` (what routes get by `Depends`, the
bearer token check among them), `routes/` (the routers), `errors` and `handlers` (JSON
refusals), `protocol` (JSON 400s for unparseable HTTP), `app` (assembles routers, middleware and
handlers), `runner` (a server in a thread, or worker processes). Nothing here imports Prefect.
"""
