"""Input side: BIDS discovery, EEG and BOLD readers, EEG-fMRI synchronisation."""
