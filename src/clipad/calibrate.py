"""`python -m clipad.calibrate`: see clipad.cli.calibrate."""
from clipad.cli.calibrate import main

if __name__ == "__main__":
    main()
