"""HTML reports built from the files each stage left in the output folder.

Stages save figures under ``sub-<label>/figures/`` (names from
:func:`bids_neurobolt.derivatives.naming.figure_path`) and sidecars beside their
derivatives; the report only reads them, so it can be rebuilt from OUTPUT_DIR alone.
"""
