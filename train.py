"""python train.py [overrides]: see clipad.cli.train (README for examples)."""
from clipad.cli.train import main

if __name__ == "__main__":
    main()
