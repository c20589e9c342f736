"""`python -m clipad.export`: see clipad.cli.export."""
import sys

from clipad.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
