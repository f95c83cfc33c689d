"""Stage 11, orchestration: all that imports Prefect (flows, tasks, task runner, deployments).

The rest of the package is plain Python that runs and is tested without Prefect; the modules
here only compose it into tasks and flows and add retries, logs and artifacts.
"""
