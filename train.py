"""python train.py [overrides]: see clipad.cli.train (README for examples)."""
from clipad.cli.entry_points import train_main

if __name__ == "__main__":
    train_main()
