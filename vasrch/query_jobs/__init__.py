"""Stage 10, query jobs: a batch of query files in, a results table and page out.

`job` embeds and searches locally and writes the job folder, `service_client` sends the images
to the workspace's warm query service instead (no TensorFlow, no FastAPI), `routing` decides
which of the two answers.
"""
