"""Stage 3, the index: feature vectors in, a searchable clustered index out.

Takes the feature vectors of a catalog and gives the diagnostics (PCA, elbow, silhouette), the
fitted spherical KMeans and the inverted-file index with its calibration. `clustering` sweeps k
and fits KMeans, `search_index` holds the index, its storage and its multi-probe search,
`training` builds and evaluates a run's index, `evaluation` measures recall and precision,
`figures` holds what an evaluation gives (calibrated probes, figures per kind of query).
"""
