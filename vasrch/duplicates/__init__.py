"""Stage 7, duplicates: a bulk job's scored pairs in, near-duplicate groups out.

`groups` builds star groups around a representative from the pairs above the threshold, and
reads a saved run's groups back.
"""
