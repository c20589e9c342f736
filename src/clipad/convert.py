"""`python -m clipad.convert`: see clipad.cli.convert."""
from clipad.cli.convert import main

if __name__ == "__main__":
    main()
