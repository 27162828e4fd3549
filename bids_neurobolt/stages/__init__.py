"""Per-run stage glue: read a run's inputs, call the pure functions, write derivatives.

Each module exposes ``run(ctx) -> StageResult``; :mod:`bids_neurobolt.workflow` decides
which stages run, in which order, and what to do when one fails.
"""
