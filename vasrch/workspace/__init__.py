"""Stage 4, the workspace: built artefacts in, versioned and verified runs out.

Takes a staged run folder and gives a published run (hashed manifest, atomic LATEST), read back
verified. `runs` publishes, lists, opens and prunes runs, `run_manifest` is the typed manifest
they write and read, `lock` keeps one writer per workspace, `promotion` holds nightly's quality
gates and warm start. On a workspace in object storage, `store` reads and writes its objects,
`remote_runs` publishes and fetches runs there, `lease` keeps one writer, and `mirror` runs a
writer in a local cache of it.
"""
