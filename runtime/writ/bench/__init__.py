"""`make bench`: every Writ figure beside a floor measured in the same run."""
