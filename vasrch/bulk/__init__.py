"""Stage 6, bulk: a run's index in, every photo's neighbour products out.

`neighbours` searches the whole catalog in chunks, scores each pair's duplicate prints and
merges photo answers into product answers.
"""
