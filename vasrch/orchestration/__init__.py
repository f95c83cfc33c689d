"""Everything that imports Prefect: flows, tasks, the task runner and the deployments.

The rest of the package is plain Python that runs and is tested without Prefect; the modules
here only compose it into tasks and flows and add retries, logs and artifacts.
"""
