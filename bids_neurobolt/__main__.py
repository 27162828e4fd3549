"""Allow ``python -m bids_neurobolt``."""

from bids_neurobolt.cli import main

if __name__ == "__main__":
    main()
