"""`python -m clipad.predict`: see clipad.cli.predict."""
from clipad.cli.entry_points import predict_main

if __name__ == "__main__":
    predict_main()
