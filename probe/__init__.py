"""diffprobe probe stage: classification heads trained on cached features, many at once.

`python -m probe train` trains a grid (heads x feature sets x learning rates x weight
decays) in one pass over a store, selects on validation and evaluates on test;
`python -m probe eval` re-evaluates a saved head. probe reads stores only through
extract.store.schema and never runs the U-Net.
"""
