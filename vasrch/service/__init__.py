"""Stage 9, the service: the warm HTTP query server (`vasrch query-server`), on FastAPI and uvicorn.

One job per module: `settings` (what the service is told, checked), `holder` (the served run,
in memory, swapped when runs/LATEST moves on), `uploads` (an image out of a POST body),
`limits` (pixel limit and decode slots), `memory` (freed memory back to the OS), `metrics`
(Prometheus), `middleware` (access log, metrics, bearer token), `schemas` (request and answer
shapes), `errors` (JSON refusals), `protocol` (JSON 400s for unparseable HTTP), `app` (routes),
`runner` (a server in a thread, or worker processes). Nothing here imports Prefect.
"""
