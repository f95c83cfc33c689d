"""Stage 2, features: photos in, feature vectors and duplicate prints out.

Takes the catalog table's new or changed photos and gives Parquet feature shards keyed by
sha256 (the feature cache). `backbones` holds the CNNs and their fingerprint, `extraction`
batches decoding and inference and writes the shards, `duplicate_prints` makes each photo's
small print for near-duplicate scoring, `print_similarity` scores pairs of prints.
"""
