"""`python -m clipad.summary`: see clipad.cli.summary."""
from clipad.cli.summary import main

if __name__ == "__main__":
    main()
