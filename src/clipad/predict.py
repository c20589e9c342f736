"""`python -m clipad.predict`: see clipad.cli.predict."""
from clipad.cli.predict import main

if __name__ == "__main__":
    main()
