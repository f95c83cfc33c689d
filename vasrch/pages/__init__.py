"""Stage 8, pages: a run or a query job in, what a person looks at out.

`rendering` is the Jinja2 environment of `templates/`, `thumbnails` the small JPEGs pages show,
`report` a run's report.html, `query_page` a query job's results.html, `query_artifact` a query
job's Markdown for the Prefect UI, `file_server` the read-only HTTP view that makes their links
open.
"""
